"""The Rules page (leads): argmax against confidence thresholds on the hold-out set (coverage,
accuracy on the covered part, risk-coverage), and auto-accept with its audit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from loop import autoaccept
from loop.curve import curve_rows
from loop.evaluation import risk_coverage
from loop.project import Project
from pages.common import allowed, reload_project, sidebar

LARGE_AUTO_ACCEPT = 50   # auto-accepting more images than this at once asks for confirmation


def rules_page() -> None:
    project = sidebar(allowed("lead_pages"))
    st.title(f"Decision rules: {project.name}")
    evaluations = project.store.evaluations(project.id)
    if not evaluations:
        st.info("No model yet.")
        return
    latest = evaluations[-1]
    st.markdown(f"Model v{latest['version']}, trained on {latest['n_labels']} labels, scored on "
                f"{latest['n_holdout']} hold-out images.")
    for rule in latest["rules"][1:]:
        if rule["n_decided"]:
            st.markdown(f"- at **{rule['threshold']:g}**: auto-accepting would decide "
                        f"{rule['coverage']:.0%} of images, with {rule['errors_per_100']:.1f} errors "
                        f"per 100 accepted")
        else:
            st.markdown(f"- at **{rule['threshold']:g}**: no image is that confident yet")
    table = pd.DataFrame(latest["rules"])[["rule", "coverage", "accuracy", "errors_per_100", "n_decided"]]
    st.dataframe(table, hide_index=True)
    ids, classes, probs = project.store.holdout_predictions(latest["id"])
    index_of = {cid: i for i, cid in enumerate(c["id"] for c in project.class_rows)}
    coverage, risk = risk_coverage(np.array([index_of[c] for c in classes]), probs)
    st.markdown("**Risk–coverage** (error rate among the most confident images, as more are accepted)")
    st.line_chart(pd.DataFrame({"coverage": coverage, "error rate": risk}).set_index("coverage"), height=240)
    st.markdown("**As labels grew**")
    history = pd.DataFrame(curve_rows(project)).set_index("labels")
    st.line_chart(history[["coverage_0.9", "accuracy_0.9", "coverage_0.8", "accuracy_0.8"]], height=240)
    auto_accept_panel(project)


def auto_accept_panel(project: Project) -> None:
    st.subheader("Auto-accept")
    allowed("auto_accept")
    current = project.settings.auto_accept_precision
    st.caption("Probabilities are calibrated by temperature scaling fitted on the training labels "
               "(cross-validated); the threshold is the lowest one that meets the precision on the "
               "hold-out set. A share of what it would accept goes to people as an audit.")
    target = st.slider("Precision to promise", 0.80, 0.995, float(current or 0.95), 0.005)
    if st.button("Preview the threshold for this precision"):
        chosen = autoaccept.preview(project, target, project.settings.audit_share)
        if chosen["threshold"] is None:
            st.warning(f"No threshold reaches {target:.1%} precision on the hold-out set yet.")
        else:
            st.info(f"Threshold {chosen['threshold']:.3f} (temperature {chosen['temperature']:.2f}): it "
                    f"decides {chosen['holdout_coverage']:.0%} of hold-out images at "
                    f"{chosen['holdout_precision']:.1%} precision, and would label "
                    f"{chosen['would_accept']:,} pool image(s) now.")
    a, b, c = st.columns(3)
    if a.button("Turn on (after every retrain)" if not current else f"Change to {target:.1%}"):
        st.session_state["confirm_auto"] = ("on", target)
    if current and b.button("Turn off"):
        project.update_settings(auto_accept_precision=None)
        reload_project(project)
        st.rerun()
    if c.button("Auto-accept now"):
        st.session_state["confirm_auto"] = ("now", target)
    pending = st.session_state.get("confirm_auto")
    if pending:
        kind, chosen_target = pending
        preview = autoaccept.preview(project, chosen_target, project.settings.audit_share)
        count = preview["would_accept"]
        if preview["threshold"] is None:
            st.warning(f"No threshold reaches {chosen_target:.1%} precision yet: nothing would be "
                       "labeled.")
        if count <= LARGE_AUTO_ACCEPT or st.button(
                f"Yes, label {count:,} image(s) automatically at {chosen_target:.1%}", type="primary"):
            st.session_state.pop("confirm_auto")
            if kind == "on":
                project.update_settings(auto_accept_precision=chosen_target)
                reload_project(project)
            result = autoaccept.run(project, chosen_target, project.settings.audit_share)
            st.success(f"Accepted {result['accepted']:,} image(s), sent {result['audited']} to people "
                       "as an audit." + (" It runs again after every retrain." if kind == "on" else ""))
        else:
            st.warning(f"This would label **{count:,}** image(s) with no person looking at them "
                       f"(and send {preview['would_audit']} to people as an audit). Confirm below, "
                       "or move the slider.")
            if st.button("Cancel"):
                st.session_state.pop("confirm_auto")
                st.rerun()
    report = autoaccept.audit_report(project)
    accepted = autoaccept.auto_accepted(project)
    st.markdown(f"Auto-accept is **{'on at ' + format(current, '.1%') if current else 'off'}**. "
                f"{len(accepted)} label(s) in force were auto-accepted. Audit: "
                + (f"measured precision **{report['measured_precision']:.1%}** on {report['reviewed']} "
                   f"reviewed image(s), promised {report['promised_precision']:.1%}."
                   if report["reviewed"] else f"{report['audits']} image(s) waiting for people."))
    if accepted and st.button(f"Undo all {len(accepted)} auto-accepted label(s)"):
        st.success(f"Retracted {autoaccept.undo(project)} label(s).")
