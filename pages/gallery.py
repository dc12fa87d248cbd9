"""The hold-out gallery of the Curve page: a slider (and a play button) steps through the model
versions so a lead watches the errors melt away, the difference from another version (fixed,
broken, what each predicted), and a lead's correction of an image's label. Computations live in
`loop/gallery.py`; this module draws."""

from __future__ import annotations

import time

import streamlit as st

from loop.curve import CurveData, human_labels
from loop.gallery import compare, pending_truth, predictions, relabel, select
from loop.project import Project
from pages.common import escape, picture

PLAY_SECONDS = 1.5      # one version per step while playing
PER_ROW = 8             # one st.columns row per 8 images: rows stay aligned however captions wrap
SHOWN = 48
SHOW = {"all": "all images", "wrong": "wrong ones", "fixed": "fixed ones (were wrong)",
        "broken": "broken ones (were right)", "moved": "fixed, broken or changed"}


def version_name(evaluation: dict) -> str:
    return f"v{evaluation['version']} · {human_labels(evaluation):,} labels"


def gallery(project: Project, data: CurveData, lead: str) -> None:
    if not data.evaluations:
        return
    st.subheader("Hold-out gallery")
    names = [version_name(e) for e in data.evaluations]
    shown = st.session_state.get("gallery_version")
    if shown not in names or shown == st.session_state.get("gallery_newest"):
        st.session_state["gallery_version"] = names[-1]     # on the newest: follow new versions
    st.session_state["gallery_newest"] = names[-1]
    playing = st.session_state.get("gallery_playing", False)
    st.button("Pause" if playing else "Play through the versions", key="gallery_play",
              icon=":material/pause:" if playing else ":material/play_arrow:",
              on_click=toggle_play, args=(names,), disabled=len(names) < 2,
              help="Steps the gallery through every model version, oldest first.")
    # While playing, the gallery alone reruns on a timer (a full-page rerun turns the timer off).
    st.fragment(gallery_body, run_every=PLAY_SECONDS if playing else None)(project, data, lead)


def toggle_play(names: list[str]) -> None:
    if st.session_state.get("gallery_playing"):
        st.session_state["gallery_playing"] = False
        return
    st.session_state["gallery_playing"] = True
    st.session_state["gallery_stepped_at"] = None    # the first draw shows the start, unstepped
    if st.session_state.get("gallery_version") == names[-1]:
        st.session_state["gallery_version"] = names[0]     # play from the first version


def step_if_playing(names: list[str]) -> None:
    """While playing, move the version slider one step per timer tick; stop at the newest."""
    if not st.session_state.get("gallery_playing"):
        return
    stepped_at = st.session_state.get("gallery_stepped_at")
    if stepped_at is None:
        st.session_state["gallery_stepped_at"] = time.time()
        return
    if time.time() - stepped_at < 0.8 * PLAY_SECONDS:
        return
    at = names.index(st.session_state["gallery_version"])
    if at + 1 < len(names):
        st.session_state["gallery_version"] = names[at + 1]
        st.session_state["gallery_stepped_at"] = time.time()
    if at + 2 >= len(names):
        st.session_state["gallery_playing"] = False
        st.rerun(scope="app")     # redraw the play button and turn the timer off


def gallery_body(project: Project, data: CurveData, lead: str) -> None:
    evaluations = data.evaluations
    names = [version_name(e) for e in evaluations]
    step_if_playing(names)
    chosen_name = st.select_slider("Model version", names, key="gallery_version")
    at = names.index(chosen_name)
    chosen = evaluations[at]
    a, b, c, d = st.columns(4)
    others = ["previous version", "none", *names]
    against = a.selectbox("Compare with", others, key="gallery_compare")
    show = b.selectbox("Show", list(SHOW), format_func=SHOW.get, key="gallery_show",
                       help="Fixed and broken are counted against the version under 'Compare with'.")
    only = c.selectbox("True class", ["all"] + data.class_names, key="gallery_class")
    low, high = d.slider("Confidence", 0.0, 1.0, (0.0, 1.0), key="gallery_confidence")

    view = predictions(project, chosen)
    other = None
    if against == "previous version" and at > 0:
        other = predictions(project, evaluations[at - 1])
    elif against not in ("previous version", "none") and against != chosen_name:
        other = predictions(project, evaluations[names.index(against)])
    diff = compare(other, view) if other is not None else None
    if diff is not None:
        st.markdown(f"**{diff.sentence()}**")
    elif show in ("fixed", "broken", "moved"):
        st.caption("Nothing to compare with: choose another version under 'Compare with'.")

    ids = None
    if show == "wrong":
        ids = set(view.image_ids[~view.correct].tolist())
    elif diff is not None and show != "all":
        ids = {"fixed": set(diff.fixed), "broken": set(diff.broken),
               "moved": set(diff.fixed + diff.broken + diff.changed)}[show]
    true_class = None if only == "all" else data.class_names.index(only)
    rows = select(view, true_class, (low, high), ids, limit=SHOWN)
    wrong = int((~view.correct[rows]).sum())
    st.caption(f"Model v{view.version} (trained on {view.labels:,} labels from people): "
               f"{int(view.correct.sum()):,} of {len(view.image_ids):,} hold-out images right. "
               f"Showing {len(rows)}{' (the first ' + str(SHOWN) + ')' if len(rows) == SHOWN else ''}, "
               f"{wrong} wrong (first, marked ✗).")
    pending = pending_truth(project, view)
    images = {i["id"]: i for i in project.store.images(project.id, split="holdout")}
    before = other.answer_of() if other is not None else {}
    names_of = data.class_names
    for start in range(0, len(rows), PER_ROW):
        columns = st.columns(PER_ROW)
        for column, row in zip(columns, rows[start:start + PER_ROW]):
            image_id = int(view.image_ids[row])
            with column:
                picture_data = picture(project, images[image_id]["path"], 96) if image_id in images else None
                if picture_data:
                    st.image(picture_data, width=96)
                right = bool(view.correct[row])
                lines = [(f"{'✓' if right else '✗'} {escape(names_of[view.predicted[row]])} "
                          f"{view.confidence[row]:.0%}")]
                if not right:
                    lines.append(f"is {escape(names_of[view.truth[row]])}")
                if image_id in before:
                    said, was_right = before[image_id]
                    lines.append(f"v{other.version}: {escape(names_of[said])} {'✓' if was_right else '✗'}")
                if image_id in pending:
                    lines.append(f"relabeled {escape(names_of[pending[image_id]])} (next evaluation)")
                st.caption("  \n".join(lines))
    if len(rows):
        relabel_form(project, view, rows, images, lead)


def relabel_form(project: Project, view, rows, images: dict, lead: str) -> None:
    """A lead corrects an image's label: a label event like any other (source "review")."""
    names = project.class_names

    def describe(row: int) -> str:
        image_id = int(view.image_ids[row])
        path = images.get(image_id, {}).get("path", f"image {image_id}")
        return (f"{path}: labeled {names[view.truth[row]]}, v{view.version} says "
                f"{names[view.predicted[row]]}")

    with st.form("gallery_relabel", border=True):
        st.markdown("**Correct a label** (a hold-out image's new label counts from the next "
                    "evaluation; earlier scores keep the label they were measured with)")
        left, right = st.columns([3, 1])
        row = left.selectbox("Image", list(rows), format_func=describe, key="gallery_relabel_image")
        chosen = right.selectbox("Label", names, index=int(view.predicted[row]) if len(rows) else 0,
                                 key="gallery_relabel_class")
        if st.form_submit_button("Set this label"):
            st.success(escape(relabel(project, int(view.image_ids[row]), chosen, lead)))
