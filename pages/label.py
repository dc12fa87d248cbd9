"""The Label page: the annotator's window of leased images in a browser widget that answers keys
itself (so a key always answers the image on screen), and grid mode. Every answer goes through
`LabelingSession.apply`, tagged with its image id and a browser-made id that makes it idempotent."""

from __future__ import annotations

import base64
import time
from pathlib import PurePath

import streamlit as st

from loop.session import LabelingSession
from loop.trainer import trainer_for
from pages.common import allowed, escape, sidebar
from pages.label_widget import grid_widget, images_held, label_widget, pending_answers

WINDOW = 24         # images the browser holds ahead: more than a fast typist answers in one redraw
SHOW_SIZE = 512     # px, the most an image's long side is sent at (smaller images go as they are)
REFRESH_SECONDS = 5     # an idle page redraws this often: new suggestions after a retrain
RENEW_SECONDS = 60      # leases are renewed at most this often (answers renew them too)
GRID_SIZE = 12


def session_for(project, person) -> LabelingSession:
    return LabelingSession(project, person.name, trainer_for(project), window=WINDOW)


def label_page() -> None:
    person = allowed("label")
    project = sidebar(person)
    st.title(f"Label: {project.name}")
    mode = st.radio("Mode", ["One by one", "Grid"], horizontal=True, label_visibility="collapsed")
    session = session_for(project, person)
    if mode == "One by one":
        session.release_grid()          # grid images are held only while the grid shows them
        label_one(session)
    else:
        label_grid(session)


def _apply(session: LabelingSession, key: str) -> dict:
    """Store what the browser sent (each answer once: a uid stored before is a no-op), before
    anything is drawn, and remember the acknowledgements to send back."""
    result = session.apply(pending_answers(key))
    memory = st.session_state.setdefault(f"{key}-acks", {"acked": [], "refused": {}, "notes": []})
    memory["acked"] = list(dict.fromkeys(memory["acked"] + result["acked"]))[-500:]
    new = {u: r for u, r in result["refused"].items() if u not in memory["refused"]}
    memory["refused"] = dict(list({**result["refused"], **memory["refused"]}.items())[-100:])
    memory["notes"] = result["notes"] + [f"Not stored: {r}" for r in new.values()]
    return memory


@st.fragment(run_every=REFRESH_SECONDS)
def label_one(session: LabelingSession) -> None:
    """The widget and what it needs, redrawn alone (not the whole page) when the browser sends
    answers, and every few seconds while idle so a retrained model's suggestions arrive."""
    project = session.project
    key = f"label-{project.name}-{session.annotator}"
    memory = _apply(session, key)
    renewed = st.session_state.get(f"{key}-renewed", 0.0)
    if time.time() - renewed > RENEW_SECONDS:
        session.renew()
        st.session_state[f"{key}-renewed"] = time.time()
    items = session.window()
    since = st.session_state.setdefault(f"{key}-since", time.time())
    progress = session.progress(since)
    version = session.latest_version()
    # Each picture goes to the browser once: it keeps them by image id and says which it holds
    # (a run that was cut short may never have reached it, so the server does not guess).
    held = images_held(key)
    shown = [_item(project, item, with_src=item.image_id not in held) for item in items]
    # A new browser session starts its list of answers from the store (after a reload).
    history = None
    if not st.session_state.get(f"{key}-history-sent"):
        history = [{**h, "name": PurePath(h["path"]).name, "src": screen_image(project, h["path"])}
                   for h in session.recent(10)]
        st.session_state[f"{key}-history-sent"] = True
    label_widget(
        shown, project.class_names, key=key,
        acked=memory["acked"], refused=memory["refused"],
        status={**progress, "batch": session.batch_size,
                "model_version": version["version"] if version else None,
                "message": " ".join(memory["notes"]) or
                ("" if items else "Nothing left to label in this project.")},
        storage_key=f"juicer:{project.name}:{session.annotator}", history=history)
    if not items and not progress["pending"]:
        st.success("Nothing left to label in this project.")


def _item(project, item, with_src: bool = True) -> dict:
    # The file's name, not its folder: in a project made from class folders, the folder is the
    # answer.
    return {"image_id": item.image_id, "name": PurePath(item.path).name,
            "src": screen_image(project, item.path) if with_src else None,
            "suggestion": item.suggestion, "confidence": item.confidence,
            "model_version": item.model_version,
            "mark": item.origin if item.origin in ("holdout", "audit") else
            ("holdout" if item.split == "holdout" else None)}


def screen_image(project, path: str, size: int = SHOW_SIZE) -> str:
    """The image as a data URL for the screen: at most `size` px on its long side (a small
    image goes as it is; the browser enlarges it, pixelated), in whichever of PNG, WebP and
    JPEG is smallest. An unreadable image becomes an empty picture (its name still shows)."""
    try:
        mime, data = _screen_image(str(project.root / path), size,
                                   int(project.settings.max_megapixels * 1e6))
    except ValueError:
        return "data:image/png;base64,"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@st.cache_data(max_entries=4096, show_spinner=False)
def _screen_image(path: str, size: int, max_pixels: int) -> tuple[str, bytes]:
    from models.images import display_image, encoded

    picture = display_image(path, size, max_pixels=max_pixels, enlarge=False)   # decoded once
    choices = []
    for fmt, mime in (("PNG", "image/png"), ("WEBP", "image/webp"), ("JPEG", "image/jpeg")):
        try:
            choices.append((len(data := encoded(picture, fmt)), mime, data))
        except (OSError, KeyError):                  # an encoder this Pillow lacks
            continue
    # Lossy formats only pay off for photographs; for a tiny or flat image PNG is smaller.
    _, mime, data = min(choices, key=lambda e: e[0])
    return mime, data


@st.fragment(run_every=RENEW_SECONDS)
def label_grid(session: LabelingSession) -> None:
    """Grid mode: the images the model puts in one class, leased only while shown (a short lease
    renewed by each redraw; another class's are let go at once). Keys in the browser: arrows
    move, Space marks wrong, Enter confirms; only the images that were on screen are confirmed."""
    project = session.project
    key = f"grid-{project.name}-{session.annotator}"
    name = st.selectbox("Class to confirm", project.class_names, key=f"{key}-class")
    confirmed = pending_grid_confirm(key)
    if confirmed is not None:
        shown = st.session_state.get(f"{key}-items", {})
        items = [shown[i] for i in confirmed["shown"] if i in shown]
        if items and confirmed["class"] == items[0].suggestion:
            result = session.confirm_grid(confirmed["class"], items, set(confirmed["wrong"]))
            grid_ids = {item.image_id for item in items}
            others = len(set(result["labeled"]) - grid_ids)     # pending answers, submitted too
            st.session_state[f"{key}-note"] = (
                f"Labeled {len(set(result['labeled']) & grid_ids)} image(s) as "
                f"{escape(confirmed['class'])}" +
                (f" and submitted your {others} pending answer(s)" if others else "") +
                "; retraining in the background." +
                (f" {len(result['conflicts'])} kept as conflicts (someone else labeled them)."
                 if result["conflicts"] else ""))
    if note := st.session_state.pop(f"{key}-note", None):
        st.success(note)
    items = session.grid(name, n=GRID_SIZE)
    st.session_state[f"{key}-items"] = {item.image_id: item for item in items}
    if not items:
        st.info("No free unlabeled images are predicted as this class (or there is no model yet).")
        return
    grid_widget([{"image_id": item.image_id, "src": screen_image(project, item.path, 160),
                  "name": PurePath(item.path).name, "confidence": item.confidence}
                 for item in items], name, key=key)


def pending_grid_confirm(key: str) -> dict | None:
    """The grid's confirm, if the browser sent one for this run (read before the grid is
    leased again, so it confirms exactly what was on screen)."""
    state = st.session_state.get(key) or {}
    confirm = state.get("confirm") if hasattr(state, "get") else None
    if not isinstance(confirm, dict):
        return None
    try:
        return {"class": str(confirm["class"]), "shown": [int(i) for i in confirm["shown"]],
                "wrong": [int(i) for i in confirm.get("wrong") or []]}
    except (KeyError, TypeError, ValueError):
        return None
