"""The Team page (leads): answers kept as conflicts, each settled by keeping the label in force,
taking another answer, or sending the image to a third person; how well people agree on the
images they labeled twice; and how many of each person's labels the model suspects. The reads are
`loop.team` and `loop.suspects`; settling is `Store.resolve_conflict`."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from loop import suspects, team
from loop.curve import share
from loop.store import StoreError
from pages.common import allowed, escape, image_card, sidebar, store


def team_page() -> None:
    person = allowed("resolve")
    project = sidebar(person)
    st.title(f"Team: {project.name}")
    conflicts_panel(project, person)
    flags_panel(project, person)
    agreement_panel(project)
    suspicion_panel(project)


SENT = "team-sent"     # what the last Send to said, shown on the run after its callback


def conflicts_panel(project, person) -> None:
    kind, message = st.session_state.pop(SENT, (None, None))
    if kind == "error":
        st.error(escape(message))          # it may quote a person's name
    elif kind == "toast":
        st.toast(escape(message))
    rows = team.open_conflicts(project)
    st.subheader(f"Conflicts ({len(rows)} image(s))")
    if not rows:
        st.caption("No open conflicts: every answer so far agreed with the label in force, or was "
                   "the first one.")
        return
    st.caption("An answer becomes a conflict instead of the label when the image was someone "
               "else's by then, or when it disagrees with another person's label. The label in "
               "force stays until you decide.")
    people = [p["name"] for p in store().people() if not p["revoked_at"]]
    for row in rows[:50]:
        image_id = row["image_id"]
        with image_card(project, row["path"], 120):
            force = (f"**{escape(row['in_force'])}** by {escape(row['in_force_by'])}"
                     if row["in_force"] else "no label")
            st.markdown(f"{escape(row['path'])} ({row['split']}): in force {force}")
            for answer in row["answers"]:
                st.markdown(f"- {escape(answer['annotator'])} said **{escape(answer['class'])}**: "
                            f"{escape(answer['reason'])}")
            if row["sent_to"]:
                st.caption(f"sent to {escape(row['sent_to'])} for a third opinion")
            choices = list(dict.fromkeys([c for c in [row["in_force"]] +
                                          [a["class"] for a in row["answers"]] if c]))
            columns = st.columns(len(choices) + 2)
            for k, choice in enumerate(choices):
                if columns[k].button(f"Label it {choice}", key=f"take-{image_id}-{k}"):
                    _settle(project, person, image_id, choice)
            other = columns[-2].selectbox("Another class", [c for c in project.class_names
                                                            if c not in choices],
                                          index=None, key=f"other-{image_id}")
            if other:
                _settle(project, person, image_id, other)
            # Sent from the widget's callback, which clears the choice: it acts once, where
            # a value kept across runs sent the image again and reran the page for ever.
            columns[-1].selectbox("Send to", [p for p in people if p != person.name],
                                  index=None, key=f"send-{image_id}", on_change=_send,
                                  args=(project, person, image_id))


def _send(project, person, image_id: int) -> None:
    key = f"send-{image_id}"
    name, st.session_state[key] = st.session_state.get(key), None
    if not name:
        return
    try:
        project.store.assign(project.id, image_id, name, by=person.name)
        st.session_state[SENT] = ("toast", f"Image {image_id} sent to {name} for a third opinion.")
    except StoreError as exc:
        st.session_state[SENT] = ("error", str(exc))


def flags_panel(project, person) -> None:
    """Images annotators flagged as unclear or none of the classes: no label, out of the queue
    until the lead sends them back (never to the person who flagged them)."""
    rows = project.store.flags(project.id)
    st.subheader(f"Flagged ({len(rows)} image(s))")
    if not rows:
        st.caption("No image is flagged. Annotators press F on an image that is unclear or fits "
                   "none of the classes; it comes here instead of becoming a label.")
        return
    st.caption("Flagged images are not labels: they are left out of training and exports, and "
               "out of everyone's queue until you send them back (never to who flagged them).")
    for row in rows[:50]:
        with image_card(project, row["path"], 120):
            st.markdown(f"{escape(row['path'])}: flagged by {escape(row['annotator'])}")
            if st.button("Back to the queue", key=f"unflag-{row['image_id']}-{row['annotator']}"):
                project.store.resolve_flag(project.id, row["image_id"], person.name)
                st.rerun()


def _settle(project, person, image_id: int, class_name: str) -> None:
    try:
        project.store.resolve_conflict(project.id, image_id, person.name,
                                       project.store.class_id(project.id, class_name))
        st.toast(f"Image {image_id} labeled {class_name}.")
        st.rerun()
    except StoreError as exc:
        st.error(str(exc))


def agreement_panel(project) -> None:
    st.subheader("Agreement")
    report = team.agreement(project)
    if not report.get("items"):
        st.caption("No image has answers from two people yet. Set the project's overlap share "
                   "(for example 0.1) to have some images labeled twice on purpose.")
        return
    fleiss = report.get("fleiss")
    st.markdown(f"**{report['items']}** image(s) answered by two or more people"
                + (f"; Fleiss' kappa **{fleiss:.2f}**" if fleiss is not None else "") + ".")
    if report.get("pairs"):
        st.markdown("**Per pair** (Cohen's kappa)")
        st.dataframe(pd.DataFrame([{"pair": " & ".join(p["raters"]), "images": p["items"],
                                    "agree": f"{p['agreement']:.0%}",
                                    "kappa": "-" if p["kappa"] is None else f"{p['kappa']:.2f}"}
                                   for p in report["pairs"]]), hide_index=True)
    if report.get("classes"):
        st.markdown("**Per class** (how often two people agree when one of them chose it)")
        st.dataframe(pd.DataFrame([{"class": c["class"], "images": c.get("items"),
                                    "agreement": "-" if c.get("agreement") is None
                                    else f"{c['agreement']:.0%}"} for c in report["classes"]]),
                     hide_index=True)
    worst = report.get("worst")
    if worst:
        st.markdown(f"Disagrees with the others' majority most: **{escape(worst)}**.")


def suspicion_panel(project) -> None:
    """Per person, the share of their labels in force the model reads as likely wrong, and of
    those a second person reviewed, the share the review changed or withdrew."""
    st.subheader("Suspected errors per person")
    rows = suspects.suspicion_by_annotator(project)
    if not rows:
        st.caption("No label judged yet: after each retrain the trainer judges every label in force "
                   "with heads that never saw it (the Review page lists the suspects).")
        return
    st.dataframe(pd.DataFrame([{
        "person": r["annotator"], "labels judged": r["judged"], "suspected": r["suspected"],
        "suspected rate": _rate(r["suspected_rate"]), "reviewed": r["reviewed"],
        "corrected by review": r["corrected"], "corrected rate": _rate(r["corrected_rate"]),
    } for r in rows]), hide_index=True)
    st.caption("Judged: that person's labels in force the model judged after the last retrain, by "
               "heads trained without each label. Suspected: those it reads as likely wrong "
               "(confident learning); some are hard images, not mistakes. Corrected by review: of "
               "their labels a second person reviewed, those changed or withdrawn. A person whose "
               "rates stand well above the others' may need help, or the class definitions may "
               "need a word; auto... and folder are the machine's labels and the imported ones.")


def _rate(value: float | None) -> str:
    return "-" if value is None else share(value)
