"""The Curve page (leads): hold-out accuracy after each retrain, the forecast of how many more
labels reach a target, the subsampling study, per-class accuracy and the hold-out gallery."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from loop.curve import curve_figure, curve_rows, forecast_curve, strategy_versus_control
from loop.project import Project
from loop.study import report, run_study, study_figure
from pages.common import allowed, data_dir, picture, project_named, sidebar


def curve_page() -> None:
    project = sidebar(allowed("lead_pages"))
    st.title(f"Learning curve: {project.name}")
    live_curve(project)
    gallery(project)


@st.fragment(run_every=5)
def live_curve(project: Project) -> None:
    rows = curve_rows(project)
    if not rows:
        st.info("No model yet: the curve starts with the first retrain.")
        return
    last = rows[-1]
    st.markdown(f"**{last['accuracy']:.1%}** hold-out accuracy with **{last['labels']}** labels "
                f"(model v{last['version']}, {len(rows)} retrains).")
    evaluation = project.store.evaluations(project.id)[-1]
    target = st.slider("Target accuracy", 0.5, 0.99, 0.9, 0.01, key="target")
    points = tuple((r["labels"], r["accuracy"]) for r in rows)
    forecast = fit_curve(str(data_dir()), project.name, len(rows))
    st.pyplot(curve_figure(points, forecast, target), clear_figure=True)
    if forecast is None:
        st.caption("The forecast appears once three retrains at different label counts are scored.")
    else:
        needed = forecast.labels_needed(target)
        st.markdown(f"**Forecast:** {needed.more_than(last['labels'])}." + (
            "" if needed.reachable else " More labels of the same kind will not get there; a "
            "better backbone or cleaner labels might."))
        st.caption(f"Forecast: bounded curve families weighed by how well they predicted later "
                   f"points on real learning curves ({forecast.priors.learned_on}); 80% interval from "
                   f"a bootstrap over retrains and hold-out images, calibrated on those curves "
                   f"(`python -m loop backtest-forecast --source lcdb`). Labels are those of the "
                   f"curve; hold-out accuracy on {evaluation['n_holdout']} images.")
    study_panel(project, target)
    per_class = pd.DataFrame({"class": list(evaluation["per_class"]),
                              "accuracy": list(evaluation["per_class"].values())})
    per_class = per_class.sort_values("accuracy")
    comparison = strategy_vs_control(str(data_dir()), project.name, rows[-1]["version"])
    if comparison:
        st.markdown(f"**Strategy against random, on this project's own labels:** a head trained on "
                    f"{comparison['labels']} of the strategy's picks scores "
                    f"{comparison['strategy_accuracy']:.1%} on the hold-out set; one trained on the "
                    f"{comparison['labels']} random control picks scores {comparison['control_accuracy']:.1%} "
                    f"(both with the {comparison['seeds']} seed labels).")
    else:
        st.caption("Strategy against random: shown once the random control slice (10% of queries) "
                   "holds 5 labels.")
    st.markdown("**Per-class accuracy** (the classes at the top need labels most)")
    st.dataframe(per_class, hide_index=True)


@st.cache_data(show_spinner=False, max_entries=16)
def strategy_vs_control(data_dir: str, name: str, version: int) -> dict | None:
    """Recomputed once per model version (it trains a few small heads)."""
    return strategy_versus_control(project_named(name))


@st.cache_resource(show_spinner=False, max_entries=16)
def fit_curve(data_dir: str, name: str, n_evaluations: int):
    """Refitted once per retrain (keyed by the number of evaluations; about 10 ms)."""
    try:
        return forecast_curve(project_named(name))
    except ValueError:
        return None


def study_panel(project: Project, target: float) -> None:
    """The subsampling study on the current labels: train on random subsets, forecast the full
    set, then train on it and compare, the way a lead checks a forecast before buying labels."""
    with st.expander("Check the forecast: subsampling study on the current labels"):
        st.caption("Trains the head on random subsets of the labels so far (5 repeats per size), fits "
                   "the forecaster to those, predicts the accuracy with all labels, then trains on all "
                   "of them and shows the measured value beside the prediction.")
        if st.button("Run the study", key="run_study"):
            try:
                with st.spinner("Training heads on subsets..."):
                    st.session_state["study"] = run_study(project, None, 5, target)
            except (ValueError, KeyError) as error:   # too few labels, embeddings missing: said plainly
                st.error(error.args[0] if isinstance(error, KeyError) else str(error))
        result = st.session_state.get("study")
        if result is not None and result.project == project.name:
            st.pyplot(study_figure(result), clear_figure=True)
            st.text(report(result))



def gallery(project: Project) -> None:
    evaluations = project.store.evaluations(project.id)
    if not evaluations:
        return
    st.subheader("Hold-out gallery")
    versions = {f"v{e['version']} ({e['n_labels']} labels)": e for e in evaluations}
    labels = list(versions)
    a, b, c, d = st.columns(4)
    chosen = versions[a.selectbox("Model", labels, index=len(labels) - 1)]
    compare = b.selectbox("Compare with", ["-"] + labels)
    only = c.selectbox("True class", ["all"] + project.class_names)
    low, high = d.slider("Confidence", 0.0, 1.0, (0.0, 1.0))
    ids, classes, probs = project.store.holdout_predictions(chosen["id"])
    index_of = {cid: i for i, cid in enumerate(c["id"] for c in project.class_rows)}
    truth = np.array([index_of[c] for c in classes])
    predicted, confidence = probs.argmax(1), probs.max(1)
    keep = (confidence >= low) & (confidence <= high)
    if only != "all":
        keep &= truth == project.class_names.index(only)
    changed = None
    if compare != "-":
        other_ids, _, other_probs = project.store.holdout_predictions(versions[compare]["id"])
        other_correct = dict(zip(other_ids.tolist(), (other_probs.argmax(1) == truth).tolist()))
        changed = np.array([other_correct.get(i) != bool(p == t) for i, p, t in zip(ids, predicted, truth)])
        keep &= changed
        st.caption(f"Showing only the images whose result differs between {compare} and the chosen model.")
    wrong_first = np.argsort((predicted == truth)[keep], kind="stable")
    shown = np.flatnonzero(keep)[wrong_first][:48]
    st.caption(f"{int(keep.sum())} image(s) match; {int((predicted != truth)[keep].sum())} wrong "
               f"(shown first, marked ✗).")
    images = {i["id"]: i for i in project.store.images(project.id, split="holdout")}
    columns = st.columns(8)
    for k, row in enumerate(shown):
        with columns[k % 8]:
            data = picture(project, images[int(ids[row])]["path"], 96)
            if data:
                st.image(data, width=96)
            mark = "✓" if predicted[row] == truth[row] else "✗"
            st.caption(f"{mark} {project.class_names[predicted[row]]} {confidence[row]:.0%}"
                       + ("" if mark == "✓" else f" (is {project.class_names[truth[row]]})"))
