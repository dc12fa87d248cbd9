"""The Rules page (leads): argmax against confidence thresholds on the hold-out set (coverage,
accuracy on the covered part, risk-coverage), and auto-accept with its audit.

Every action is a button callback, so it has run before the page reads the store; every figure
on the page then comes from one read of the store (`Store.snapshot`), taken after it."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from loop import autoaccept
from loop.evaluation import risk_coverage
from loop.project import Project
from pages.common import allowed, page_figures, sidebar

HISTORY_THRESHOLDS = (0.9, 0.8)
# Four hues told apart by everyone, colour-blind people included (Okabe and Ito), one per line.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7")
NOTES = "auto-accept-notes"         # what the last action did, said once on the next draw
PENDING = "auto-accept-pending"     # (kind, precision, count) of a large run awaiting a yes


def rules_page() -> None:
    project = sidebar(allowed("lead_pages"))
    st.title(f"Decision rules: {project.name}")
    with project.store.snapshot():
        evaluations = project.store.evaluations(project.id)
        latest = evaluations[-1] if evaluations else None
        predictions = project.store.holdout_predictions(latest["id"]) if latest else None
        state = autoaccept.state(project)
        page_figures(project)
    if latest is None:
        st.info("No model yet.")
        return
    st.markdown(f"Model v{latest['version']}, trained on {latest['n_labels']:,} labels, scored on "
                f"{latest['n_holdout']:,} hold-out images.")
    st.markdown(rules_sentence(latest["rules"]))
    st.dataframe(rules_table(latest["rules"]), hide_index=True)
    _, classes, probs = predictions
    index_of = {cid: i for i, cid in enumerate(c["id"] for c in project.class_rows)}
    coverage, risk = risk_coverage(np.array([index_of[c] for c in classes]), probs)
    st.markdown("**Risk–coverage**: the error rate among the most confident hold-out images, as "
                "more of them are accepted")
    st.altair_chart(risk_coverage_chart(coverage, risk), width="stretch", height=260)
    st.markdown("**As labels grew**: what each rule would have done, model by model")
    st.altair_chart(history_chart(evaluations), width="stretch", height=320)
    auto_accept_panel(project, state)


def rules_sentence(rules: list[dict], threshold: float = 0.9) -> str:
    """The trade-off in one sentence: the top class always, against a confidence threshold."""
    top = rules[0]
    rule = next((r for r in rules if r["threshold"] == threshold), rules[-1])
    text = (f"Always taking the top class decides every hold-out image with "
            f"{top['errors_per_100']:.1f} errors per 100. ")
    if not rule["n_decided"]:
        return text + f"No image is {rule['threshold']:g} confident yet."
    return text + (f"At confidence **{rule['threshold']:g}**, auto-accepting would decide "
                   f"{rule['coverage']:.0%} of images ({rule['n_decided']:,}), with "
                   f"{rule['errors_per_100']:.1f} errors per 100 accepted; the others go to people.")


def rules_table(rules: list[dict]) -> pd.DataFrame:
    """The decision rules with names and figures for people."""
    return pd.DataFrame([{
        "Rule": "always take the top class" if r["threshold"] == 0 else f"confidence ≥ {r['threshold']:g}",
        "Decides": f"{r['coverage']:.0%}",
        "Accuracy on decided": "-" if r["accuracy"] is None else f"{r['accuracy']:.1%}",
        "Errors per 100 accepted": "-" if r["errors_per_100"] is None else f"{r['errors_per_100']:.1f}",
        "Images decided": f"{r['n_decided']:,}",
    } for r in rules])


def risk_coverage_chart(coverage: np.ndarray, risk: np.ndarray) -> alt.Chart:
    data = pd.DataFrame({"share accepted": coverage, "error rate": risk})
    return alt.Chart(data, height=240).mark_line(color=PALETTE[0]).encode(
        x=alt.X("share accepted", axis=alt.Axis(format="%"), title="share of hold-out images accepted"),
        y=alt.Y("error rate", axis=alt.Axis(format="%"), title="error rate among them"),
        tooltip=[alt.Tooltip("share accepted", format=".1%"), alt.Tooltip("error rate", format=".1%")])


def history_series(evaluations: list[dict]) -> pd.DataFrame:
    """One row per model version and line: (labels people gave, line name, value)."""
    rows = []
    for e in evaluations:
        by_threshold = {r["threshold"]: r for r in e["rules"]}
        for threshold in HISTORY_THRESHOLDS:
            rule = by_threshold.get(threshold)
            if rule is None:
                continue
            rows.append({"labels": e["n_labels"] - e["n_auto"], "version": e["version"],
                         "line": f"decides, at ≥ {threshold:g}", "value": rule["coverage"]})
            if rule["accuracy"] is not None:
                rows.append({"labels": e["n_labels"] - e["n_auto"], "version": e["version"],
                             "line": f"accuracy on decided, at ≥ {threshold:g}",
                             "value": rule["accuracy"]})
    return pd.DataFrame(rows, columns=["labels", "version", "line", "value"])


def history_chart(evaluations: list[dict]) -> alt.Chart:
    data = history_series(evaluations)
    lines = [f"{what}, at ≥ {t:g}" for t in HISTORY_THRESHOLDS
             for what in ("accuracy on decided", "decides")]
    return alt.Chart(data, height=260).mark_line(point=True).encode(
        x=alt.X("labels", title="labels people gave (auto-accepted ones not counted)"),
        y=alt.Y("value", axis=alt.Axis(format="%"), title=None),
        color=alt.Color("line", scale=alt.Scale(domain=lines, range=list(PALETTE)),
                        legend=alt.Legend(title=None, orient="right", labelLimit=400, symbolStrokeWidth=3)),
        strokeDash=alt.StrokeDash("line", scale=alt.Scale(domain=lines, range=[[1, 0], [6, 3]] * 2),
                                  legend=None),
        tooltip=["version", "labels", "line", alt.Tooltip("value", format=".1%")])


# -- auto-accept: each button's work is done in its callback, before the page draws ------------

def _note(kind: str, text: str) -> None:
    st.session_state.setdefault(NOTES, []).append((kind, text))


def _run(project: Project, kind: str, precision: float) -> None:
    if kind == "on":
        project.update_settings(auto_accept_precision=precision)
    result = autoaccept.run(project, precision, project.stored_settings().audit_share)
    _note("success", f"Accepted {result['accepted']:,} image(s), sent {result['audited']:,} to people "
                     "as an audit." + (" It runs again after every retrain." if kind == "on" else ""))


def _ask(project: Project, kind: str) -> None:
    """Turn on / auto-accept now: at once for a small count, else ask first."""
    precision = st.session_state["auto-precision"]
    preview = autoaccept.preview(project, precision, project.stored_settings().audit_share)
    if preview["threshold"] is None:
        if preview["would_audit"]:        # nothing to label yet, but an audit to send: send it
            _run(project, kind, precision)
            return
        _note("warning", "Nothing was labeled: " + autoaccept.describe_preview(preview) + ".")
        if kind == "on":      # on: it labels once an answered audit's bound meets the promise
            project.update_settings(auto_accept_precision=precision)
            _note("info", f"Auto-accept is on at {precision:.1%}: it labels once people have "
                          "answered an audit whose lower bound on precision meets it.")
        return
    if autoaccept.needs_confirmation(preview["would_accept"]):
        st.session_state[PENDING] = (kind, precision, preview["would_accept"], preview["would_audit"])
    else:
        _run(project, kind, precision)


def _confirm(project: Project) -> None:
    kind, precision, _, _ = st.session_state.pop(PENDING)
    _run(project, kind, precision)


def _turn_off(project: Project) -> None:
    project.update_settings(auto_accept_precision=None)
    _note("success", "Auto-accept is off.")


def _undo(project: Project) -> None:
    _note("success", f"Retracted {autoaccept.undo(project):,} auto-accepted label(s).")


def auto_accept_panel(project: Project, state: dict) -> None:
    """`state` is `autoaccept.state(project)`, read after this run's action."""
    st.subheader("Auto-accept")
    allowed("auto_accept")
    current = state["precision"]
    st.caption("It keeps its promise on the pool itself: a random sample of the pool images the model "
               "is fairly sure of goes to people first, without a suggestion, as an audit. Once they "
               "have answered all of it, the threshold is the lowest confidence at which the 95% lower "
               "bound (Clopper-Pearson) on the audited precision meets the promise, and the images "
               "that audit was drawn from are labeled above it; then the next audit is drawn. "
               "Probabilities are calibrated by temperature scaling fitted on the training labels "
               "(cross-validated).")
    if "auto-precision" not in st.session_state:
        st.session_state["auto-precision"] = float(current or 0.95)
    target = st.slider("Precision to promise", 0.80, 0.995, step=0.005, format="%.3f",
                       key="auto-precision")
    st.caption(f"At {target:.1%} an audit needs at least {autoaccept.audits_needed(target):,} audited "
               f"images above a threshold, all right, before anything is labeled (more if some are wrong).")
    if st.button("Preview the threshold for this precision"):
        chosen = autoaccept.preview(project, target, project.settings.audit_share)
        text = autoaccept.describe_preview(chosen)
        st.info(text[0].upper() + text[1:] + ".")
    row = st.container(horizontal=True)
    row.button("Turn on (after every retrain)" if not current else f"Change to {target:.1%}",
               on_click=_ask, args=(project, "on"))
    if current:
        row.button("Turn off", on_click=_turn_off, args=(project,))
    row.button("Auto-accept now", on_click=_ask, args=(project, "now"))
    spent = state["audit_round"] is None or state["audit_round"]["closed"]
    if spent:       # no audit open: drawing one labels nothing, so it needs no confirmation
        row.button("Send an audit to people now", on_click=_run, args=(project, "now", target))
    for kind, text in st.session_state.pop(NOTES, []):
        getattr(st, kind)(text)
    pending = st.session_state.get(PENDING)
    if pending:
        kind, precision, count, audit = pending
        st.warning(f"This would label **{count:,}** image(s) with no person looking at them (and "
                   f"send {audit:,} to people as an audit). Confirm below, or cancel.")
        answer = st.container(horizontal=True)
        answer.button(f"Yes, label {count:,} image(s) automatically at {precision:.1%}", type="primary",
                   on_click=_confirm, args=(project,))
        answer.button("Cancel", on_click=lambda: st.session_state.pop(PENDING, None))
    st.markdown(f"Auto-accept is **{'on at ' + format(current, '.1%') if current else 'off'}**. "
                f"**{state['in_force']:,}** label(s) in force were auto-accepted. "
                f"Audit: {autoaccept.describe_audit(state)}.")
    if state["in_force"]:
        st.button(f"Undo all {state['in_force']:,} auto-accepted label(s)", on_click=_undo,
                  args=(project,))
