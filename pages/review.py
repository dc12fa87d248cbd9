"""The Review page: labels the model reads as probably wrong (`loop.suspects`), each kept, changed
or flagged by a second person. A lead sees every open suspect and sends them to people; an
annotator sees those sent to them. Deciding is `suspects.review`; sending is `Store.assign_review`.

A widget only notes what was chosen (a callback); the page acts on it on the next run, after the
token was checked again, then reads the queue: what it draws already shows the decision."""

from __future__ import annotations

import streamlit as st

from loop import suspects
from loop.curve import share
from loop.store import StoreError
from pages.common import allowed, escape, image_card, sidebar, store

CHOSEN = "review-chosen"      # (kind, image id, event id, class or person) awaiting the next run
SHOWN = 50                    # cards drawn at once; the count above says how many are open
HOLDOUT = "hold-out: every curve point is scored against this label"


def review_page() -> None:
    person = allowed("review")
    project = sidebar(person)
    st.title(f"Review: {project.name}")
    act(project, person, st.session_state.pop(CHOSEN, None))
    lead = person.role == "lead"
    reviewer = None if lead else person.name
    with project.store.snapshot():      # the count and the cards: one read
        rows = suspects.review_queue(project, reviewer=reviewer, limit=SHOWN)
        status(project, project.store.open_suspects_count(project.id, reviewer), lead)
    people = [p["name"] for p in store().people() if not p["revoked_at"]] if lead else []
    for row in rows:
        card(project, person, row, people)


def act(project, person, chosen: tuple | None) -> None:
    """Carry out the choice a widget noted in the last run, as `person`."""
    if chosen is None:
        return
    kind, image_id, event_id, value = chosen
    try:
        if kind == "send":
            project.store.assign_review(project.id, image_id, value, by=person.name,
                                        event_id=event_id)
            st.toast(escape(f"Image {image_id} sent to {value} for review."))
            return
        row = suspects.review(project, image_id, person.name, kind, class_name=value,
                              event_id=event_id)
    except StoreError as exc:
        st.error(escape(str(exc)))        # it may quote a class or a person's name
        return
    said = {"kept": f"kept as {row_class(project, row['class_id'])}",
            "changed": f"changed to {row_class(project, row['class_id'])}",
            "flagged": "withdrawn and flagged for the lead"}[row["decision"]]
    rescored = (f"; {len(row['rescored'])} stored evaluation(s) re-scored"
                if row["rescored"] else "")
    st.toast(escape(f"Image {image_id}: label {said}{rescored}."))


def row_class(project, class_id: int | None) -> str:
    return next((c["name"] for c in project.class_rows if c["id"] == class_id), "no class")


def status(project, n_open: int, lead: bool) -> None:
    """Which model the suspects were judged after, how many are open, and what the review
    changed on the hold-out set (the yardstick of every curve point)."""
    judged = project.store.suspects_version(project.id)
    latest = project.store.latest_model_version(project.id)
    if judged is None:
        st.markdown("Labels not judged yet: the trainer judges the labels after each retrain.")
    else:
        st.markdown(f"Judged after version **{judged}** of {latest['version'] if latest else judged}: "
                    f"**{n_open:,}** open suspect(s)"
                    + (" in all" if lead else " sent to you") + ".")
    # Per image: the review that last changed it (an image changed twice is one label changed).
    changed = {r["image_id"]: r for r in project.store.reviews(project.id, split="holdout")
               if r["decision"] != "kept"}
    if changed:
        withdrawn = sum(r["decision"] == "flagged" for r in changed.values())
        st.info(f"{len(changed)} hold-out label(s) changed by review"
                + (f" ({withdrawn} withdrawn)" if withdrawn else "")
                + "; stored evaluations re-scored against the labels as they are now.")
    if not n_open:
        st.caption("Nothing to review. After each retrain, heads that never saw a label judge it, "
                   "and the labels they read as likely wrong come here." if lead else
                   "Nothing is sent to you for review. A lead sends suspected labels here.")
    elif lead:
        st.caption("A suspect is a label the model, trained without it, reads as likely wrong "
                   "(confident learning). Hold-out labels people gave come first (every curve "
                   "point is scored against them), labels that came with the folder last. Send a "
                   "suspect to a second person, or decide it here."
                   + (f" The {SHOWN} least likely are shown." if n_open > SHOWN else ""))


def giver(row: dict) -> str:
    """Who gave the label, as people read it."""
    annotator = escape(row["annotator"])
    if row["annotator"].startswith("auto"):
        return f"auto-accepted ({annotator})"
    if row["annotator"] == "folder":
        return "the imported folder"
    return annotator


def chance(p: float) -> str:
    """A probability as a percentage; one that rounds to 0% says it is small, not none."""
    return "under 0.1%" if p < 0.0005 else share(p)


def card(project, person, row: dict, people: list[str]) -> None:
    image_id, event_id = row["image_id"], row["event_id"]
    key = f"{image_id}-{event_id}"                # a new label on the image: new widgets
    given, predicted = row["given"], row["predicted"]
    with image_card(project, row["path"], 160):
        where = HOLDOUT if row["split"] == "holdout" else "training pool"
        st.markdown(f"{escape(row['path'])} ({where})")
        st.markdown(f"Label given: **{escape(given)}**, by {giver(row)}. The model's choice: "
                    f"**{escape(predicted)}**, at **{chance(row['p_predicted'])}**; it gives "
                    f"{escape(given)} **{chance(row['p_given'])}** (model v{row['model_version']}).")
        if row["assigned_to"]:
            st.caption(f"sent to {escape(row['assigned_to'])} for review")
        buttons = st.container(horizontal=True)
        buttons.button(f"Keep {escape(given)}", key=f"keep-{key}", on_click=choose,
                       args=("kept", image_id, event_id, None))
        buttons.button(f"Change to {escape(predicted)}", key=f"change-{key}", type="primary",
                       on_click=choose, args=("changed", image_id, event_id, predicted))
        buttons.button("Flag (unclear / none of the classes)", key=f"flag-{key}",
                       on_click=choose, args=("flagged", image_id, event_id, None))
        columns = st.columns(2)
        others = [c for c in project.class_names if c not in (given, predicted)]
        columns[0].selectbox("Another class", others, index=None, key=f"other-{key}",
                             disabled=not others, placeholder="Change to another class",
                             on_change=choose_from, args=(f"other-{key}", "changed", image_id,
                                                          event_id))
        if people:
            to = [p for p in people if p not in (row["annotator"], person.name)]
            columns[1].selectbox("Send to", to, index=None, key=f"send-{key}",
                                 disabled=not to, placeholder="A second person reviews it",
                                 on_change=choose_from, args=(f"send-{key}", "send", image_id,
                                                              event_id))


def choose(kind: str, image_id: int, event_id: int, value: str | None) -> None:
    st.session_state[CHOSEN] = (kind, image_id, event_id, value)


def choose_from(key: str, kind: str, image_id: int, event_id: int) -> None:
    """A selectbox's choice, noted once: the box is emptied again (else every later run of the
    page would send or change the image again)."""
    value = st.session_state.get(key)
    if value is not None:
        choose(kind, image_id, event_id, value)
        st.session_state[key] = None
