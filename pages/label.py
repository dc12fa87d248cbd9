"""The Label page: the annotator's window of leased images in a browser widget that answers keys
itself (so a key always answers the image on screen), and grid mode. Every answer goes through
`LabelingSession.apply`, tagged with its image id and a browser-made id that makes it idempotent."""

from __future__ import annotations

import base64

import streamlit as st

from loop.session import LabelingSession
from loop.trainer import trainer_for
from pages.common import allowed, escape, picture, sidebar
from pages.label_widget import label_widget, pending_answers

WINDOW = 8          # images the browser holds ahead
SHOW_SIZE = 360     # px, the long side of an image on screen


def session_for(project, person) -> LabelingSession:
    return LabelingSession(project, person.name, trainer_for(project), window=WINDOW)


def label_page() -> None:
    person = allowed("label")
    project = sidebar(person)
    st.title(f"Label: {project.name}")
    mode = st.radio("Mode", ["One by one", "Grid"], horizontal=True, label_visibility="collapsed")
    session = session_for(project, person)
    if mode == "One by one":
        st.caption("Keys: Enter confirms the suggestion · 1-9, 0 pick a class · S or → skips · "
                   "U or ← undoes · B submits the batch now")
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


def label_one(session: LabelingSession) -> None:
    project = session.project
    key = f"label-{project.name}-{session.annotator}"
    memory = _apply(session, key)
    session.renew()
    items = session.window()
    pending = len(session.pending())
    version = session.latest_version()
    label_widget(
        [_item(project, item) for item in items], project.class_names, key=key,
        acked=memory["acked"], refused=memory["refused"],
        status={"pending": pending, "batch": session.batch_size,
                "model_version": version["version"] if version else None,
                "message": " ".join(memory["notes"]) or
                ("" if items else "Nothing left to label in this project.")},
        storage_key=f"juicer:{project.name}:{session.annotator}")
    if not items and not pending:
        st.success("Nothing left to label in this project.")


def _item(project, item) -> dict:
    data = picture(project, item.path, SHOW_SIZE)
    return {"image_id": item.image_id, "name": item.path,
            "src": "data:image/png;base64," + base64.b64encode(data or b"").decode(),
            "suggestion": item.suggestion, "confidence": item.confidence,
            "model_version": item.model_version,
            "mark": item.origin if item.origin in ("holdout", "audit") else
            ("holdout" if item.split == "holdout" else None)}


def label_grid(session: LabelingSession) -> None:
    project = session.project
    name = st.selectbox("Class to confirm", project.class_names)
    items = session.grid(name, n=12)
    if not items:
        st.info("No free unlabeled images are predicted as this class (or there is no model yet).")
        return
    st.caption("Tick the images that are NOT this class, then confirm the rest.")
    rejected = set()
    columns = st.columns(6)
    for k, item in enumerate(items):
        with columns[k % 6]:
            data = picture(project, item.path, 120)
            if data:
                st.image(data, width=120)
            if st.checkbox(f"wrong ({item.confidence:.0%})", key=f"reject-{item.image_id}"):
                rejected.add(item.image_id)
    if st.button(f"Confirm {len(items) - len(rejected)} as {name}", type="primary"):
        result = session.confirm_grid(name, items, rejected)
        st.success(f"Labeled {len(result['labeled'])} image(s) as {escape(name)}; retraining in the "
                   "background." + (f" {len(result['conflicts'])} kept as conflicts (someone else "
                                    "labeled them)." if result["conflicts"] else ""))
