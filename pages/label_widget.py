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
<div class="lw-root" data-image-id="" data-outbox="0" data-saved="0">
  <div class="lw-stage"><div class="lw-waiting">Waiting for more images...</div></div>
  <div class="lw-info"><span class="lw-suggestion"></span><span class="lw-mark"></span>
    <span class="lw-name"></span></div>
  <div class="lw-classes"></div>
  <div class="lw-help">Enter: confirm the suggestion · 1–9, 0: that class · S or →: skip ·
    U or ←: undo · B: submit the batch</div>
  <div class="lw-note" role="status" aria-live="polite" hidden></div>
  <div class="lw-status"><span class="lw-saved"></span><span class="lw-server"></span></div>
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


def pending_answers(key: str) -> list[dict]:
    """The answers the browser sent for the widget `key` and the server has not acknowledged,
    read from the session state before the widget is drawn, so that one rerun can store them
    and acknowledge them in the same `label_widget` call. Empty before the widget's first run."""
    return _answers_from(st.session_state.get(key) or {})


def label_widget(items: list[dict], classes: list[str], *, key: str, acked: list[str] = (),
                 refused: dict[str, str] | None = None, status: dict | None = None,
                 storage_key: str | None = None,
                 on_change: Callable[[], None] | None = None) -> list[dict]:
    """Draw the labeling widget and return the answers the browser holds unacknowledged.

    `items` is the window of images leased to this annotator, in order (each with `image_id`,
    `src` (a data URL), `name`, `suggestion`, `confidence`, `model_version`, `mark`); `classes`
    are the class names (keys 1-9 and 0 pick the first ten). Pass the uids already stored in
    `acked` and those refused in `refused` (uid -> reason, shown to the annotator); the browser
    then drops them from its outbox. `storage_key` names the browser's localStorage entry that
    keeps unacknowledged answers across a closed tab. `on_change` runs before the page's script
    whenever the browser sends a changed outbox (read it with `pending_answers(key)`), so a page can
    store answers before it draws anything. Each returned answer is
    `{"uid", "image_id", "action": "answer"|"skip"|"undo"|"submit", "class", "model_version", "t"}`.
    """
    data = {
        "key": key,
        "items": [_item(i) for i in items],
        "classes": [str(c) for c in classes],
        "acked": [str(u) for u in acked],
        "refused": {str(u): str(r) for u, r in (refused or {}).items()},
        "status": dict(status or {}),
        "storage_key": storage_key,
    }
    result = _COMPONENT(key=key, data=data, default={"answers": []},
                        on_answers_change=on_change or (lambda: None))
    return _answers_from(result)


def _item(item: dict) -> dict:
    mark = item.get("mark")
    if mark not in (None, "holdout", "audit"):
        raise ValueError(f"item {item.get('image_id')!r} has mark {mark!r}; "
                         "use None, 'holdout' or 'audit'")
    return {
        "image_id": int(item["image_id"]),
        "src": str(item["src"]),
        "name": str(item.get("name") or ""),
        # Marked images are scored against the annotator: their suggestion never leaves the server.
        "suggestion": None if mark or item.get("suggestion") is None else str(item["suggestion"]),
        "confidence": None if mark or item.get("confidence") is None else float(item["confidence"]),
        "model_version": None if item.get("model_version") is None else int(item["model_version"]),
        "mark": mark,
    }
