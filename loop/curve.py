"""The learning curve as a lead reads it: one row per retrain, the forecaster fitted to the
hold-out scores, the strategy against its random control slice, and the figure the Curve page
draws. Pages draw what these return; nothing here imports Streamlit."""

from __future__ import annotations

import numpy as np

from loop.project import Project


def curve_rows(project: Project) -> list[dict]:
    """One row per evaluation (that is, per retrain), in CURVE_COLUMNS."""
    rows = []
    for e in project.store.evaluations(project.id):
        row = {"version": e["version"], "labels": e["n_labels"], "auto_labels": e["n_auto"],
               "accuracy": e["accuracy"],
               "balanced_accuracy": e["balanced_accuracy"], "ece": e["ece"]}
        for rule in e["rules"]:
            name = "argmax" if rule["threshold"] == 0 else f"{rule['threshold']:g}"
            for measure in ("coverage", "accuracy", "errors_per_100"):
                row[f"{measure}_{name}"] = rule[measure]
        rows.append(row)
    return rows


def forecast_curve(project: Project, n_boot: int = 100):
    """The learning-curve forecaster (loop.forecast) fitted to the project's hold-out scores, its
    per-image results resampled jointly across retrains; None before 3 distinct labeled counts."""
    from loop.backtest import holdout_correctness
    from loop.forecast import LearningCurveForecaster

    evaluations = project.store.evaluations(project.id)
    if len({e["n_labels"] for e in evaluations}) < 3:
        return None
    holdout = [e["n_holdout"] for e in evaluations]
    correct = holdout_correctness(project.store, project.id, evaluations)
    return LearningCurveForecaster(len(project.class_names), holdout, n_boot=n_boot).fit(
        [e["n_labels"] for e in evaluations], [e["accuracy"] for e in evaluations], correct)


def strategy_versus_control(project: Project, repeats: int = 5, min_control: int = 5) -> dict | None:
    """Does the strategy beat random picking, on this project's own labels? Heads trained on the
    m labels of the random control slice and on m labels drawn from the strategy's picks (the
    seeds added to both) are scored on the hold-out set; None until there are `min_control`
    control labels."""
    from models.heads import SoftmaxHead

    events = {}
    for event in project.store.label_events(project.id):
        events[event["image_id"]] = event
    pool = {i["id"] for i in project.store.images(project.id, split="pool")}
    current = {i: e for i, e in events.items() if i in pool and e["class_id"] is not None}
    seeds = [i for i, e in current.items() if e["source"] == "seed"]
    control = [i for i, e in current.items() if e["origin"] == "control"]
    chosen = [i for i, e in current.items() if e["origin"] == "strategy"]
    if len(control) < min_control or len(chosen) < len(control):
        return None
    ids, X, y = project.labeled("pool")
    row = {int(i): k for k, i in enumerate(ids)}
    _, X_holdout, y_holdout = project.labeled("holdout")
    rng = np.random.default_rng(0)

    def score(picked):
        rows = [row[i] for i in seeds + list(picked)]
        if len(np.unique(y[rows])) < 2:
            return None
        head = SoftmaxHead(len(project.class_names)).fit(X[rows], y[rows])
        return float(np.mean(head.predict(X_holdout) == y_holdout))

    random_score = score(control)
    strategy_scores = [score(rng.choice(chosen, len(control), replace=False)) for _ in range(repeats)]
    strategy_scores = [s for s in strategy_scores if s is not None]
    if random_score is None or not strategy_scores:
        return None
    return {"labels": len(control), "seeds": len(seeds), "control_accuracy": random_score,
            "strategy_accuracy": float(np.mean(strategy_scores))}


def curve_figure(points: tuple, forecast, target: float):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, accuracy = map(np.array, zip(*points))
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.plot(labels, accuracy, "o", label="hold-out accuracy after each retrain")
    if forecast is not None:
        needed = forecast.labels_needed(target)
        end = max(labels.max() * 4, min(1.2 * (needed.labels or 0), labels.max() * 64))
        grid = np.geomspace(max(1, labels.min()), end, 200)
        mean, low, high = forecast.predict(grid)
        ax.plot(grid, mean, "-", label="forecast")
        ax.fill_between(grid, low, high, alpha=0.25, label="80% interval")
        if forecast.priors.labels_shift > 0:
            ax.plot(grid, forecast.labels_curve(grid), "--", color="C2", lw=1,
                    label="curve labels needed are read from")
        if needed.reachable and needed.labels > labels.max():
            ax.axvline(needed.labels, color="C2", ls=":", lw=1,
                       label=f"about {needed.labels:,.0f} labels for {target:.0%}")
        ax.set_xscale("log")
    ax.axhline(target, color="grey", ls=":", label=f"target {target:.0%}")
    ax.set(xlabel="labeled training images", ylabel="accuracy", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
