"""The Label page's labeling widget: a Streamlit components v2 element that holds a small window of
leased images in the browser and answers keys there, so every answer names the image that was on
screen when its key was pressed, however slow the server's reruns are.

The server's side of the contract, once per rerun::

    answers = pending_answers("label")   # what the browser holds, not yet acknowledged
    for answer in answers:
        store(answer)                    # idempotent: a uid stored before is not stored again
    label_widget(window, classes, key="label", acked=[a["uid"] for a in answers],
                 storage_key="juicer:ana")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

_HERE = Path(__file__).resolve().parent
_HTML = """
<div class="lw-root" data-image-id="" data-outbox="0" data-saved="0" data-editing="">
  <div class="lw-editing" hidden></div>
  <div class="lw-stage" title="Click to zoom"><div class="lw-waiting">Waiting for more images...</div></div>
  <div class="lw-info"><span class="lw-suggestion"></span><span class="lw-mark"></span>
    <span class="lw-name"></span></div>
  <input class="lw-filter" type="search" placeholder="Type to filter the classes (/), Enter picks"
    aria-label="Filter the classes" hidden>
  <div class="lw-classes"></div>
  <div class="lw-help">Enter: confirm the suggestion · 1–9, 0: that class · S or →: skip ·
    F: flag as unclear / none of these · U or ←: undo · B: submit the batch · click the image to zoom</div>
  <div class="lw-note" role="status" aria-live="polite" hidden></div>
  <div class="lw-status"><span class="lw-saved"></span><span class="lw-server"></span></div>
  <div class="lw-history-box" hidden><div class="lw-history-title">Your last answers (click one
    to change it)</div><ol class="lw-history"></ol></div>
</div>
"""

_COMPONENT = st.components.v2.component(
    "juicer.label_widget",
    html=_HTML,
    css=(_HERE / "label_widget.css").read_text(encoding="utf-8"),
    js=(_HERE / "label_widget.js").read_text(encoding="utf-8"),
)


def _answers_from(state: Any) -> list[dict]:
    answers = state.get("answers") if hasattr(state, "get") else None
    return [dict(a) for a in answers if isinstance(a, dict)] if isinstance(answers, list) else []


def images_held(key: str) -> set[int]:
    """Image ids whose picture the browser of widget `key` holds (it says so with each send):
    send `src` only for the others. Empty before the first send or after a reload."""
    state = st.session_state.get(key) or {}
    have = state.get("have") if hasattr(state, "get") else None
    return {int(i) for i in have if isinstance(i, int)} if isinstance(have, list) else set()


def pending_answers(key: str) -> list[dict]:
    """The answers the browser sent for the widget `key` and the server has not acknowledged,
    read from the session state before the widget is drawn, so that one rerun can store them
    and acknowledge them in the same `label_widget` call. Empty before the widget's first run."""
    return _answers_from(st.session_state.get(key) or {})


def label_widget(items: list[dict], classes: list[str], *, key: str, acked: list[str] = (),
                 refused: dict[str, str] | None = None, status: dict | None = None,
                 storage_key: str | None = None, history: list[dict] | None = None,
                 on_change: Callable[[], None] | None = None) -> list[dict]:
    """Draw the labeling widget and return the answers the browser holds unacknowledged.

    `items` is the window of images leased to this annotator, in order (each with `image_id`,
    `src` (a data URL, or None for a picture the browser holds already, see `images_held`),
    `name`, `suggestion`, `confidence`, `model_version`, `mark`); `classes`
    are the class names (keys 1-9 and 0 pick the first ten). Pass the uids already stored in
    `acked` and those refused in `refused` (uid -> reason, shown to the annotator); the browser
    then drops them from its outbox. `storage_key` names the browser's localStorage entry that
    keeps unacknowledged answers across a closed tab. `on_change` runs before the page's script
    whenever the browser sends a changed outbox (read it with `pending_answers(key)`), so a page can
    store answers before it draws anything. `history` (each `image_id`, `name`, `src`,
    `action`, `class`): the person's last answers from the store, listed (and undone, changed)
    by a page that has none of its own yet, after a reload. Each returned answer is
    `{"uid", "image_id", "action": "answer"|"skip"|"flag"|"undo"|"submit", "class",
    "model_version", "t"}` ("flag": unclear or none of the classes, for the lead).
    """
    data = {
        "key": key,
        "items": [_item(i) for i in items],
        "classes": [str(c) for c in classes],
        "acked": [str(u) for u in acked],
        "refused": {str(u): str(r) for u, r in (refused or {}).items()},
        "status": dict(status or {}),
        "storage_key": storage_key,
        "history": [{"image_id": int(h["image_id"]), "name": str(h.get("name") or ""),
                     "src": None if h.get("src") is None else str(h["src"]),
                     "action": str(h["action"]),
                     "class": None if h.get("class") is None else str(h["class"])}
                    for h in history or []],
    }
    result = _COMPONENT(key=key, data=data, default={"answers": [], "have": []},
                        on_answers_change=on_change or (lambda: None),
                        on_have_change=lambda: None)
    return _answers_from(result)


def _item(item: dict) -> dict:
    mark = item.get("mark")
    if mark not in (None, "holdout", "audit"):
        raise ValueError(f"item {item.get('image_id')!r} has mark {mark!r}; "
                         "use None, 'holdout' or 'audit'")
    return {
        "image_id": int(item["image_id"]),
        "src": None if item.get("src") is None else str(item["src"]),
        "name": str(item.get("name") or ""),
        # Marked images are scored against the annotator: their suggestion never leaves the server.
        "suggestion": None if mark or item.get("suggestion") is None else str(item["suggestion"]),
        "confidence": None if mark or item.get("confidence") is None else float(item["confidence"]),
        "model_version": None if item.get("model_version") is None else int(item["model_version"]),
        "mark": mark,
    }


# -- grid mode --------------------------------------------------------------------------------

_GRID_HTML = """
<div class="lg-root" data-wrong="" data-focus="">
  <div class="lg-help">Arrows move · Space or a click marks an image as wrong · Enter confirms the
    rest as this class</div>
  <div class="lg-grid"></div>
  <button type="button" class="lg-confirm" tabindex="-1"></button>
</div>
"""
_GRID_CSS = """
.lg-root { display: flex; flex-direction: column; gap: 0.6rem; color: var(--st-text-color, inherit); }
.lg-help { font-size: 0.85rem; opacity: 0.75; }
.lg-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(9rem, 1fr)); gap: 0.5rem; }
.lg-cell { display: flex; flex-direction: column; align-items: center; gap: 0.25rem; padding: 0.3rem;
  font: inherit; font-size: 0.8rem; color: inherit; cursor: pointer;
  background: var(--st-background-color, #fff); border: 2px solid transparent;
  border-radius: var(--st-base-radius, 0.5rem); }
.lg-cell img { width: 100%; aspect-ratio: 1; object-fit: contain; image-rendering: pixelated;
  background: var(--st-secondary-background-color, #f0f2f6); }
.lg-caption { overflow-wrap: anywhere; text-align: center; opacity: 0.8; }
.lg-cell.lg-focus { border-color: var(--st-primary-color, #ff4b4b); }
.lg-cell.lg-wrong img { opacity: 0.35; }
.lg-cell.lg-wrong .lg-caption::before { content: "✗ wrong · "; color: #c0392b; font-weight: 600; }
.lg-confirm { align-self: flex-start; font: inherit; padding: 0.4rem 0.9rem; cursor: pointer;
  color: #fff; background: var(--st-primary-color, #ff4b4b); border: none;
  border-radius: var(--st-button-radius, 0.5rem); }
"""
_GRID = st.components.v2.component(
    "juicer.label_grid", html=_GRID_HTML, css=_GRID_CSS,
    js=(_HERE / "label_grid.js").read_text(encoding="utf-8"))


def grid_widget(items: list[dict], class_name: str, *, key: str) -> dict | None:
    """Grid mode's widget: `items` (each `image_id`, `src`, `name`, `confidence`) shown as
    thumbnails of `class_name`; keys and clicks mark the wrong ones. Returns, on the run after
    the person confirmed, `{"class", "shown": [image ids on screen], "wrong": [image ids]}`, else
    None."""
    data = {"key": key, "class": str(class_name),
            "items": [{"image_id": int(i["image_id"]), "src": str(i["src"]),
                       "name": str(i.get("name") or ""), "confidence": float(i["confidence"])}
                      for i in items]}
    result = _GRID(key=key, data=data, on_confirm_change=lambda: None)
    confirm = result.get("confirm") if hasattr(result, "get") else None
    return dict(confirm) if isinstance(confirm, dict) else None

