"""The Curve page (leads): hold-out accuracy after each retrain against the labels people gave, what
the pool allows towards a target, the subsampling study, per-class accuracy and the hold-out gallery.

Every figure of a run comes from one read of the store (`read_curve`). The page is redrawn only
when a new evaluation arrives: a small fragment polls the newest evaluation's id every few seconds
and reruns the page when it changed, so nothing greys out while nothing changes, and text and
chart are always drawn together from the same target and the same evaluations."""

from __future__ import annotations

import streamlit as st

from loop.curve import (
    METRICS,
    CurveData,
    baseline_warning,
    curve_figure,
    forecast_curve,
    human_labels,
    per_class_rows,
    read_curve,
    share,
    strategy_sentence,
    strategy_versus_control,
    study_versus_live,
    target_answer,
)
from loop.project import Project
from loop.study import (
    compare_backbones,
    comparison_report,
    report,
    run_study,
    study_figure,
)
from pages.common import allowed, data_dir, page_figures, project_named, sidebar
from pages.gallery import gallery

POLL_SECONDS = 5


def curve_page() -> None:
    person = allowed("lead_pages")
    project = sidebar(person)
    st.title(f"Learning curve: {project.name}")
    with project.store.snapshot():       # the page and the sidebar: one read
        data = read_curve(project)
        stamp = project.store.evaluations_stamp(project.id)
        page_figures(project)
    watch_for_new_evaluations(project, stamp)
    if data.last is None:
        st.info("No model yet: the curve starts with the first retrain.")
        return
    left, right = st.columns([3, 1])
    target = left.slider("Target", 0.5, 0.99, 0.9, 0.01, key="target",
                         help="The accuracy you want to reach; the forecast says how many more "
                              "labels it takes, within what the pool allows.")
    metric = right.radio("Measured as", list(METRICS), format_func=METRICS.get, key="metric",
                         help="Balanced accuracy is the mean of the per-class accuracies: on an "
                              "unbalanced set it does not reward answering the common class.")
    draw_curve(project, data, target, metric)
    gallery(project, data, person.name)


@st.fragment(run_every=POLL_SECONDS)
def watch_for_new_evaluations(project: Project, shown: tuple) -> None:
    """Draws nothing (so nothing greys out): reruns the whole page only when a retrain was scored,
    or a changed hold-out label re-scored the evaluations, since this page was drawn (`shown`:
    `Store.evaluations_stamp` then)."""
    if project.store.evaluations_stamp(project.id) != shown:
        st.rerun(scope="app")


def draw_curve(project: Project, data: CurveData, target: float, metric: str) -> None:
    last = data.last
    human = human_labels(last)
    auto = f" and {last['n_auto']:,} auto-accepted" if last["n_auto"] else ""
    st.markdown(f"**{share(last['accuracy'])}** hold-out accuracy with **{human:,}** labels from "
                f"people{auto} (balanced accuracy {share(last['balanced_accuracy'])}; model "
                f"v{last['version']}, {len(data.evaluations)} retrains, {last['n_holdout']:,} "
                "hold-out images).")
    warning = baseline_warning(last, data.truth, data.class_names)
    if warning:
        st.warning(warning)
    # A review that changed a hold-out label re-scored stored points in place: part of the key.
    rescored = [e["rescored_at"] for e in data.evaluations if e.get("rescored_at")]
    latest_rescore = max(rescored, default=None)
    forecast = fit_curve(str(data_dir()), project.name, data.newest_id, len(data.evaluations),
                         latest_rescore, metric, data.evaluations)
    answer = target_answer(forecast, last, target, data.pool_size, metric, data.evaluations)
    st.markdown(f"**Forecast:** {answer.sentence}")
    if answer.pool_note and answer.status in ("met", "in_pool"):
        st.caption(answer.pool_note[0].upper() + answer.pool_note[1:] + ".")
    st.image(curve_png(str(data_dir()), project.name, data.newest_id, len(data.evaluations),
                       latest_rescore, target, metric, data.pool_size, data.evaluations, forecast,
                       answer))
    if rescored:
        st.caption(f"{len(rescored)} of the {len(data.evaluations)} point(s) were re-scored after "
                   "hold-out labels were changed by review (the Review page): every point is scored "
                   "against the hold-out labels as they are now.")
    n_auto_points = sum(1 for e in data.evaluations if e["n_auto"])
    if n_auto_points:
        st.caption(f"{n_auto_points} retrain(s) had auto-accepted labels in force (hollow red "
                   "diamonds, drawn at the labels people gave): those heads saw more labels than "
                   "the x axis counts, so the forecast is fitted only on the retrains without them.")
    if forecast is not None:
        st.caption(f"The x axis counts labels people gave; the grey area right of the pool's end "
                   f"would need more images than the project has. Forecast: bounded curve families "
                   f"weighed by how well they predicted later points on real learning curves "
                   f"({forecast.priors.learned_on}); the 80% band is a bootstrap over retrains and "
                   f"hold-out images, calibrated on those curves "
                   f"(`python -m loop backtest-forecast --source lcdb`).")
    study_panel(project, target, metric, forecast, data.pool_size)
    backbone_panel(project, target)
    comparison = strategy_vs_control(str(data_dir()), project.name, last["version"])
    if comparison:
        st.markdown(f"**Strategy against random, on this project's own labels:** "
                    f"{strategy_sentence(comparison)}")
    else:
        st.caption("Strategy against random: shown once the random control slice (10% of queries) "
                   "holds 5 labels.")
    st.markdown(f"**Per-class accuracy**, model v{last['version']} (the classes at the top need "
                "labels most)")
    st.dataframe(per_class_rows(last, data.truth, data.class_names), hide_index=True,
                 column_config={"accuracy (%)": st.column_config.NumberColumn(format="%.1f%%")})


@st.cache_data(show_spinner=False, max_entries=64)
def curve_png(data_dir: str, name: str, newest_id: int, n_evaluations: int,
              rescored_at: float | None, target: float, metric: str, pool_size: int, _evaluations,
              _forecast, _answer) -> bytes:
    """The curve figure as PNG, drawn once per evaluation, re-scoring, target, metric and pool
    size (drawing takes about half a second on two cores; everything it shows is in the key)."""
    import io

    buffer = io.BytesIO()
    curve_figure(_evaluations, _forecast, target, pool_size, metric, _answer).savefig(
        buffer, format="png", dpi=144, bbox_inches="tight")
    return buffer.getvalue()


@st.cache_data(show_spinner=False, max_entries=16)
def strategy_vs_control(data_dir: str, name: str, version: int) -> dict | None:
    """Recomputed once per model version (it trains a few small heads)."""
    return strategy_versus_control(project_named(name))


@st.cache_resource(show_spinner=False, max_entries=16)
def fit_curve(data_dir: str, name: str, newest_id: int, n_evaluations: int,
              rescored_at: float | None, metric: str, _evaluations: list[dict]):
    """Refitted once per retrain, re-scoring and metric (keyed by the newest evaluation and the
    latest re-scoring; about 10 ms)."""
    try:
        return forecast_curve(project_named(name), metric=metric, evaluations=_evaluations)
    except ValueError:
        return None


def backbone_panel(project: Project, target: float) -> None:
    """Which backbone or feature option gives the most per label on this project's own labels:
    the study once per option embedded (the same subsets and hold-out), best first."""
    from models.backbones import BACKBONES, FEATURES

    with st.expander("Which features give the most per label: compare backbones on these labels"):
        embedded = project.embedded_backbones()
        st.caption("Runs the subsampling study once per backbone or feature option whose "
                   "embeddings of every image are cached (the same subsets and hold-out for each), "
                   "and says which needs the fewest labels to reach the target. Options: "
                   + "; ".join(f"+{k}: {v}" for k, v in FEATURES.items() if k != "head") + ".")
        st.markdown("Embedded: " + (", ".join(embedded) or "none yet"))
        others = [b for b in BACKBONES if b not in embedded]
        chosen = st.multiselect("Embed these too (each takes about as long as the first embedding)",
                                others, key="embed_more")
        if chosen and st.button("Embed", key="embed_backbones"):
            bar = st.progress(0.0)
            for name in chosen:
                project.embed(lambda done, total, name=name: bar.progress(
                    done / max(total, 1), text=f"{name}: {done:,} of {total:,}"), backbone=name)
            st.rerun()
        if len(embedded) > 1 and st.button("Compare", key="compare_backbones"):
            try:
                with st.spinner(f"Running the study {len(embedded)} times..."):
                    st.session_state["backbones"] = compare_backbones(project, target, embedded)
            except (ValueError, KeyError) as error:
                st.error(error.args[0] if isinstance(error, KeyError) else str(error))
        results = st.session_state.get("backbones")
        if results and results[0].project == project.name:
            st.text(comparison_report(results))
            if results[0].target != target:
                st.caption(f"Compared for a target of {share(results[0].target)}; compare again "
                           f"for {share(target)}.")


def study_panel(project: Project, target: float, metric: str, forecast, pool_size: int) -> None:
    """The subsampling study on the current labels: train on random subsets, forecast the full
    set, then train on it and compare, the way a lead checks a forecast before buying labels."""
    with st.expander("Check the forecast: subsampling study on the current labels"):
        st.caption("Trains the head on random subsets of the labels people gave (5 repeats per "
                   "size), fits the forecaster to those, predicts the accuracy with all of them, then "
                   "trains on all of them and shows the measured value beside the prediction.")
        if st.button("Run the study", key="run_study"):
            try:
                with st.spinner("Training heads on subsets..."):
                    st.session_state["study"] = run_study(project, None, 5, target)
            except (ValueError, KeyError) as error:   # too few labels, embeddings missing: said plainly
                st.error(error.args[0] if isinstance(error, KeyError) else str(error))
        result = st.session_state.get("study")
        if result is not None and result.project == project.name:
            st.pyplot(study_figure(result), clear_figure=False)
            at_full = {"accuracy": result.measured_full, "n_labels": result.pool_size, "n_auto": 0}
            st.markdown("**The study's answer:** " + target_answer(
                result.forecaster, at_full, result.target, pool_size).sentence)
            st.text(report(result))
            if forecast is not None and result.target == target and metric == "accuracy":
                why = study_versus_live(result.labels_needed, forecast.labels_needed(target), target,
                                        result.pool_size)
                if why:
                    st.info(why)
            elif result.target != target:
                st.caption(f"The study was run for a target of {share(result.target)}; run it again "
                           f"for {share(target)}.")
