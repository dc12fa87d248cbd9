"""The learning curve as a lead reads it: one row per retrain, the forecaster fitted to the
hold-out scores, what the pool allows towards a target, in words, the strategy against its random
control slice, and the figure the Curve page draws. Pages draw what these return; nothing here
imports Streamlit.

What the counts mean, in one place (the store keeps them per model version):
- `n_labels`: every training label in force when the head trained, people's and auto-accepted;
- `n_auto`: the auto-accepted ones among them;
- human labels (`human_labels`): the rest (seeds, answers, reviews, imports, simulated answers).
The curve's x axis counts human labels, and the forecast is fitted only on retrains with no
auto-accepted label in force: "how many more labels must people give" is the question it answers.

    data = read_curve(project)                          # one read of the store
    forecast = forecast_curve(project, evaluations=data.evaluations)
    answer = target_answer(forecast, data.last, 0.9, data.pool_size)
    print(answer.sentence)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from loop.evaluation import majority_baseline
from loop.project import Project

METRICS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy"}


def human_labels(evaluation: dict) -> int:
    """Training labels people gave: every label in force (`n_labels`) less the auto-accepted.

    >>> human_labels({"n_labels": 1331, "n_auto": 1166})
    165
    """
    return int(evaluation["n_labels"]) - int(evaluation.get("n_auto") or 0)


def curve_rows(project: Project, evaluations: list[dict] | None = None) -> list[dict]:
    """One row per evaluation (that is, per retrain), in CURVE_COLUMNS: `labels` counts human
    labels, `auto_labels` the auto-accepted ones also in force, `trained_on` both."""
    rows = []
    for e in project.store.evaluations(project.id) if evaluations is None else evaluations:
        row = {"version": e["version"], "labels": human_labels(e), "auto_labels": e["n_auto"],
               "trained_on": e["n_labels"], "accuracy": e["accuracy"],
               "balanced_accuracy": e["balanced_accuracy"], "ece": e["ece"]}
        for rule in e["rules"]:
            name = "argmax" if rule["threshold"] == 0 else f"{rule['threshold']:g}"
            for measure in ("coverage", "accuracy", "errors_per_100"):
                row[f"{measure}_{name}"] = rule[measure]
        rows.append(row)
    return rows


# -- one read of the store per page run ----------------------------------------------------------

@dataclass(frozen=True)
class CurveData:
    """What the Curve page shows, read from the store once: the evaluations (oldest first), the
    pool's size, and the newest evaluation's hold-out truth (class indices)."""

    project: str
    class_names: list[str]
    evaluations: list[dict]
    pool_size: int
    truth: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    @property
    def last(self) -> dict | None:
        return self.evaluations[-1] if self.evaluations else None

    @property
    def newest_id(self) -> int | None:
        return self.last["id"] if self.last else None

    @property
    def remaining(self) -> int:
        """Pool images people have not labeled, as of the newest evaluation."""
        return max(0, self.pool_size - human_labels(self.last)) if self.last else self.pool_size


def read_curve(project: Project) -> CurveData:
    store = project.store
    evaluations = store.evaluations(project.id)
    truth = np.zeros(0, int)
    if evaluations:
        _, classes, _ = store.holdout_predictions(evaluations[-1]["id"])
        truth = np.array([project.class_index[c] for c in classes], dtype=int)
    return CurveData(project.name, list(project.class_names), evaluations,
                     len(store.images(project.id, split="pool")), truth)


# -- the forecast ---------------------------------------------------------------------------------

def fitted_evaluations(evaluations: list[dict]) -> list[dict]:
    """The evaluations the forecast is fitted on: those with no auto-accepted label in force
    (their x, human labels, is then all the head saw)."""
    return [e for e in evaluations if not e.get("n_auto")]


def holdout_credit(store, project_id: int, evaluations: list[dict], metric: str = "accuracy"
                   ) -> np.ndarray:
    """(evaluations, hold-out images): each image's share of the metric, NaN where not scored;
    a row's mean over its scored images is the metric. For accuracy, 1 right and 0 wrong; for
    balanced accuracy, right / (classes x that class's share of the row's images), so the mean is
    the mean recall. The forecaster resamples hold-out images jointly across rows; with these
    credits a resample is a Horvitz-Thompson estimate of balanced accuracy (class counts vary
    with the resample, which a stratified bootstrap would fix; the interval is a little wide)."""
    from loop.backtest import holdout_correctness

    correct = holdout_correctness(store, project_id, evaluations)
    if metric == "accuracy":
        return correct
    if metric != "balanced_accuracy":
        raise ValueError(f"metric '{metric}' is not one of {', '.join(METRICS)}")
    classes = {c["id"]: i for i, c in enumerate(store.classes(project_id))}
    results = [store.holdout_predictions(e["id"]) for e in evaluations]
    images = np.unique(np.concatenate([ids for ids, _, _ in results]))
    credit = np.full_like(correct, np.nan)
    for row, (ids, truth, _) in enumerate(results):
        if not len(ids):
            continue
        y = np.array([classes[c] for c in truth])
        present, counts = np.unique(y, return_counts=True)
        share = dict(zip(present.tolist(), (counts / len(y)).tolist()))
        weight = np.array([1 / (len(present) * share[c]) for c in y])
        at = np.searchsorted(images, ids)
        credit[row, at] = correct[row, at] * weight
    return credit


def forecast_curve(project: Project, n_boot: int = 100, metric: str = "accuracy",
                   evaluations: list[dict] | None = None):
    """The learning-curve forecaster (loop.forecast) fitted to `metric` ("accuracy" or
    "balanced_accuracy") against human labels, on the retrains with no auto-accepted label in
    force, per-image results resampled jointly across retrains; None before 3 distinct counts.
    Its interval is the one learned for this project's kind of curve (random picks or a
    strategy's, and for its labeled count so far, `Priors.for_kind`) on replays of the product's
    loop, where the priors hold one."""
    from loop.forecast import DEFAULT_PRIORS, LearningCurveForecaster, curve_kind

    if metric not in METRICS:
        raise ValueError(f"metric '{metric}' is not one of {', '.join(METRICS)}")
    if evaluations is None:
        evaluations = project.store.evaluations(project.id)
    fitted = fitted_evaluations(evaluations)
    labels = [human_labels(e) for e in fitted]
    if len(set(labels)) < 3:
        return None
    holdout = [e["n_holdout"] for e in fitted]
    credit = holdout_credit(project.store, project.id, fitted, metric)
    # For balanced accuracy the binomial hold-out variance of n_holdout images is an approximation
    # (the true one weighs rare classes more); the joint resampling above carries the real spread.
    priors = DEFAULT_PRIORS.for_kind(curve_kind(project.settings.strategy), max(labels))
    return LearningCurveForecaster(len(project.class_names), holdout, n_boot=n_boot, priors=priors).fit(
        labels, [e[metric] for e in fitted], credit)


# -- what the forecast says about a target, in words ------------------------------------------------

def share(value: float) -> str:
    """A share as people read it: 0.922 -> '92.2%', 0.9 -> '90%'.

    >>> share(0.922), share(0.9), share(0.99999)
    ('92.2%', '90%', '100%')
    """
    text = f"{value:.1%}"
    return text.replace(".0%", "%")


def _band(low: float, high: float) -> str:
    """'80-87%' for an interval of shares."""
    lo, hi = round(100 * low), round(100 * high)
    return f"{lo}%" if lo == hi else f"{lo}-{hi}%"


@dataclass(frozen=True)
class TargetAnswer:
    """What a lead is told about reaching `target`: `status` is one of "met" (measured at or
    above it), "in_pool" (the forecast reaches it before the pool runs out), "beyond_pool" (it
    would need more images than the project has), "not_reachable" (the forecast levels off below
    it), "behind_forecast" (the forecast says the labels there are should reach it, the
    measurement does not yet), or "no_forecast". `sentence` is the answer, `pool_note` what
    labeling the whole pool is forecast to reach, `mark` the labeled count where the chart may
    draw the target's crossing (None: not inside the pool)."""

    status: str
    sentence: str
    pool_note: str | None = None
    mark: float | None = None
    measured: float | None = None
    labels_now: int = 0
    pool_end: int = 0


def target_answer(forecast, last: dict, target: float, pool_size: int,
                  metric: str = "accuracy", evaluations: list[dict] | None = None) -> TargetAnswer:
    """The answer to "how many more labels to reach `target`?" within what the pool allows.

    `last` is the newest evaluation, `pool_size` the pool's images (people can label at most
    that many), `evaluations` all of them (to say why there is no forecast). Measured beats
    forecast: a target met is said so, whatever the curve says."""
    name = METRICS[metric]
    measured, now = float(last[metric]), human_labels(last)
    pool_end = max(pool_size, now)
    remaining = pool_end - now
    base = {"measured": measured, "labels_now": now, "pool_end": pool_end}
    pool_note = None
    if forecast is not None and remaining > 0:
        mean, low, high = forecast.predict(pool_end)
        pool_note = (f"labeling all {remaining:,} remaining images is forecast to reach about "
                     f"{share(mean)} {name} (80%: {_band(low, high)})")
    at = f"at {now:,} labels" + (f" (with {last['n_auto']:,} auto-accepted labels also in force)"
                                 if last.get("n_auto") else "")
    if measured >= target:
        return TargetAnswer("met", f"Measured {share(measured)} {name} {at}; the target "
                            f"({share(target)}) is met.", pool_note, **base)
    if forecast is None:
        first_auto = next((e for e in evaluations or () if e.get("n_auto")), None)
        if first_auto is not None and len(fitted_evaluations(evaluations)) < 3:
            why = (f"Auto-accepted labels have been in force since v{first_auto['version']} (at "
                   f"{human_labels(first_auto):,} labels from people): those heads saw more than "
                   "people's labels, so they cannot tell how many more labels people must give, and "
                   "fewer than three retrains before it are scored. The subsampling study below "
                   "trains on people's labels only and forecasts from them.")
        else:
            why = ("The forecast appears once three retrains at different label counts are "
                   "scored.")
        return TargetAnswer("no_forecast", f"Measured {share(measured)} {name} {at}; the target is "
                            f"{share(target)}. {why}", **base)
    needed = forecast.labels_needed(target)
    if needed.reachable and needed.labels <= now:
        return TargetAnswer("behind_forecast", f"Measured {share(measured)} {name} at {now:,} "
                            f"labels, below the {share(target)} target, although the forecast puts "
                            f"{share(target)} at or below this many labels: the measurement is "
                            "behind the fitted curve; the next retrains will tell.", pool_note,
                            **base)
    labels = needed.labels
    if (labels is None or labels > pool_end) and remaining > 0 and forecast.predict(pool_end)[0] >= target:
        # The expected curve crosses inside the pool though the labels-needed curve does not:
        # answer from the expected curve, so the two sentences never contradict each other.
        labels = forecast.expected_crossing(target)
    if labels is not None and labels <= pool_end:
        more = lambda v: f"{max(0.0, v - now):,.0f}"
        if needed.high is None or needed.high > pool_end:
            upper = f"more than the {remaining:,} images left"
        else:
            upper = more(needed.high)
        band = f"{more(needed.low)} to {upper}" if needed.low is not None else f"up to {upper}"
        # The expected curve may stay below the target where the labels-needed curve crosses
        # it (the two are tuned for different questions): then the pool's note would contradict
        # the answer, and the interval running past the pool says the same more plainly.
        agrees = forecast.predict(pool_end)[0] >= target
        left = "" if upper.startswith("more than") else f"; {remaining:,} pool images are left to label"
        return TargetAnswer("in_pool", f"About {more(labels)} more labels (80% interval "
                            f"{band}) to reach {share(target)} {name}{left}.",
                            pool_note if agrees else None, mark=labels, **base)
    if remaining <= 0:
        return TargetAnswer("beyond_pool", f"Every pool image is labeled; {share(measured)} {name} "
                            f"is measured, below the {share(target)} target. More images (or a "
                            "better backbone, or cleaner labels) are needed.", None, **base)
    sentence = (f"Labeling all {remaining:,} remaining images is forecast to reach about "
                f"{share(forecast.predict(pool_end)[0])} {name} (80%: "
                f"{_band(*forecast.predict(pool_end)[1:])}); {share(target)} would need more images "
                "than the project has")
    if not needed.reachable:
        return TargetAnswer("not_reachable", sentence + f", and more of the same kind would not get "
                            f"there: the forecast levels off at about {share(needed.ceiling)} (a "
                            "better backbone or cleaner labels might).", None, **base)
    return TargetAnswer("beyond_pool", sentence + ".", None, **base)


def baseline_warning(last: dict, truth: np.ndarray, class_names: list[str]) -> str | None:
    """A plain warning when the model does no better than always answering the hold-out set's
    most common class (accuracy) or than one class for everything (balanced accuracy: 1 / the
    classes present); None when it beats both."""
    if not len(truth):
        return None
    baseline, majority = majority_baseline(truth)
    present = len(np.unique(truth))
    said = []
    if last["accuracy"] <= baseline:
        said.append(f"its accuracy ({share(last['accuracy'])}) is no better than always answering "
                    f"'{class_names[majority]}' ({share(baseline)} of the hold-out images are "
                    f"'{class_names[majority]}')")
    if present > 1 and last["balanced_accuracy"] <= 1 / present:
        said.append(f"its balanced accuracy ({share(last['balanced_accuracy'])}) is no better than "
                    f"one class for everything ({share(1 / present)})")
    if not said:
        return None
    return (f"Model v{last['version']} has not learned yet: {'; '.join(said)}. Label more images "
            "of each class; the forecast is fitted to these points all the same.")


def study_versus_live(study_needed, live_needed, target: float, labels_now: int = 0) -> str | None:
    """Why the subsampling study and the live forecast disagree, when they do (by more than half
    again, or one reaching the target and the other not); None when they roughly agree. Counts
    are said as labels beyond the `labels_now` there are."""
    a, b = study_needed.labels, live_needed.labels
    if a is not None and b is not None and max(a, b) <= 1.5 * min(a, b):
        return None
    words = lambda v: ("never (it levels off)" if v is None
                       else f"about {max(0.0, v - labels_now):,.0f} more labels")
    return (f"The study says {words(a)} for {share(target)}, the live forecast {words(b)}. They "
            "follow different curves: the study trains on random subsets of the labels people gave "
            "(labels picked at random), the live curve follows the images the strategy picked, in "
            "the order it picked them (uncertain images first), and those gain accuracy at a "
            "different rate. The live forecast answers what the next labels from this strategy buy; "
            "the study checks how far a forecast from these labels can be trusted.")


def strategy_sentence(comparison: dict) -> str:
    """The strategy-against-random comparison as a sentence with percentages."""
    gap = 100 * (comparison["strategy_accuracy"] - comparison["control_accuracy"])
    verdict = ("about level with random picks" if abs(gap) < 1 else
               f"{abs(gap):.0f} points {'ahead of' if gap > 0 else 'behind'} random picks")
    return (f"A head trained on {comparison['labels']:,} of the strategy's picks scores "
            f"{share(comparison['strategy_accuracy'])} on the hold-out set; one trained on the "
            f"{comparison['labels']:,} random control picks scores "
            f"{share(comparison['control_accuracy'])} (both with the {comparison['seeds']:,} seed "
            f"labels): the strategy is {verdict}"
            + ("." if comparison["labels"] >= 50 else
               f"; on {comparison['labels']:,} labels each, a few points either way is within chance."))


def per_class_rows(last: dict, truth: np.ndarray, class_names: list[str]) -> list[dict]:
    """Per class, worst first: accuracy (recall) in percent, and its hold-out images."""
    counts = np.bincount(truth, minlength=len(class_names)) if len(truth) else np.zeros(len(class_names), int)
    rows = [{"class": name,
             "accuracy (%)": None if last["per_class"].get(name) is None
             else round(100 * last["per_class"][name], 1),
             "hold-out images": int(counts[k])}
            for k, name in enumerate(class_names)]
    return sorted(rows, key=lambda r: (r["accuracy (%)"] is None, r["accuracy (%)"] or 0))


def strategy_versus_control(project: Project, repeats: int = 5, min_control: int = 5) -> dict | None:
    """Does the strategy beat random picking, on this project's own labels? Heads trained on the
    m labels of the random control slice and on m labels drawn from the strategy's picks (the
    seeds added to both) are scored on the hold-out set; None until there are `min_control`
    control labels."""
    events = {}
    for event in project.store.label_events(project.id):
        events[event["image_id"]] = event
    pool = {i["id"] for i in project.store.images(project.id, split="pool")}
    current = {i: e for i, e in events.items() if i in pool and e["class_id"] is not None}
    seeds = [i for i, e in current.items() if e["source"] == "seed"]
    control = [i for i, e in current.items() if e["origin"] == "control"]
    chosen = [i for i, e in current.items() if (e["origin"] or "").startswith("strategy")]
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
        head = project.new_head()
        unlabeled = (project.unlabeled_pool(ids[rows], head.spread_max_unlabeled, seed=len(rows))
                     if head.wants_unlabeled(y[rows]) else None)
        head.fit(X[rows], y[rows], unlabeled=unlabeled)
        return float(np.mean(head.predict(X_holdout) == y_holdout))

    random_score = score(control)
    strategy_scores = [score(rng.choice(chosen, len(control), replace=False)) for _ in range(repeats)]
    strategy_scores = [s for s in strategy_scores if s is not None]
    if random_score is None or not strategy_scores:
        return None
    return {"labels": len(control), "seeds": len(seeds), "control_accuracy": random_score,
            "strategy_accuracy": float(np.mean(strategy_scores))}


# -- the figure -------------------------------------------------------------------------------------

def plain_log_axis(ax) -> None:
    """Tick labels of a log x axis as people write counts (1,000, not 10^3). This also keeps
    matplotlib's mathtext parser, which is not thread-safe, out of pages drawn in parallel."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def curve_figure(evaluations: list[dict], forecast, target: float, pool_size: int,
                 metric: str = "accuracy", answer: TargetAnswer | None = None):
    """A matplotlib Figure (no pyplot: safe in the app's threads) of `metric` against human
    labels: the retrains the forecast is fitted on, those with auto-accepted labels in force
    apart, the forecast and its 80% band, the pool's end, and the target."""
    from matplotlib.figure import Figure

    name = METRICS[metric]
    fig = Figure(figsize=(9, 4.8))
    ax = fig.add_subplot()
    fitted = fitted_evaluations(evaluations)
    auto = [e for e in evaluations if e.get("n_auto")]
    xs = [human_labels(e) for e in evaluations]
    pool_end = max([pool_size, *xs])
    if fitted:
        ax.plot([human_labels(e) for e in fitted], [e[metric] for e in fitted], "o", color="C0",
                label=f"measured {name} on the hold-out set, one per retrain")
    if auto:
        ax.plot([human_labels(e) for e in auto], [e[metric] for e in auto], "D", mfc="none",
                color="C3", label="measured with auto-accepted labels also in force (not in the forecast)")
    right = pool_end * 2.2
    left = max(1.0, min(xs) / 1.3)
    if forecast is not None:
        inside = np.geomspace(left, pool_end, 150)
        beyond = np.geomspace(pool_end, right, 30)
        mean, low, high = forecast.predict(inside)
        ax.plot(inside, mean, "-", color="C1", label=f"forecast: expected {name} as people label more")
        ax.fill_between(inside, low, high, color="C1", alpha=0.2,
                        label="80% interval: 8 measurements in 10 should fall inside")
        b_mean, b_low, b_high = forecast.predict(beyond)
        ax.plot(beyond, b_mean, ":", color="C1", alpha=0.6)
        ax.fill_between(beyond, b_low, b_high, color="0.5", alpha=0.12)
        if forecast.priors.labels_shift > 0:
            ax.plot(inside, forecast.labels_curve(inside), "--", color="C2", lw=1,
                    label="forecast used for \"labels needed\" (best at timing a target on real curves)")
        if answer is not None and answer.mark is not None and answer.mark > answer.labels_now:
            ax.axvline(answer.mark, color="C2", ls=":", lw=1,
                       label=f"about {answer.mark:,.0f} labels for {share(target)}")
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    plain_log_axis(ax)
    ax.axvline(pool_end, color="0.3", lw=1.2)
    ax.axvspan(pool_end, right, color="0.85", alpha=0.5, lw=0)
    bottom = 0.03    # in axes coordinates, whatever the y range
    ax.text(pool_end / 1.04, bottom, f"every pool image labeled ({pool_end:,})", rotation=90,
            fontsize=7, va="bottom", ha="right", color="0.3", transform=ax.get_xaxis_transform())
    middle = np.sqrt(pool_end * right)
    ax.text(middle, bottom, "beyond: more images\nthan the project has", rotation=90, fontsize=7,
            va="bottom", ha="center", color="0.4", transform=ax.get_xaxis_transform())
    ax.axhline(target, color="grey", ls=":", label=f"target {share(target)}")
    lowest = min([e[metric] for e in evaluations] + [target]
                 + ([float(forecast.predict(max(1.0, min(xs) / 1.3))[1])] if forecast is not None else []))
    ax.set(xlabel="labels people gave (auto-accepted ones not counted)", ylabel=f"hold-out {name}",
           ylim=(max(0.0, np.floor(10 * lowest - 0.5) / 10), 1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    return fig
