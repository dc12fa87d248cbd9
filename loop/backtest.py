"""Backtest of the learning-curve forecaster on real curves (the Learning Curve Database, PyPI `lcdb`,
and replays' curve.csv files): fit on the points up to N0, score at 2x, 4x and 8x N0 beside two
baselines; the priors are learned on LCDB datasets kept apart from the ones scored.

    python -m loop backtest-forecast --source lcdb --json
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import importlib.util
import json
import os
import pickle
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from loop.forecast import (
    DEFAULT_PRIORS,
    FAR,
    PRIORS_FILE,
    Z80,
    LabelsNeeded,
    LearningCurveForecaster,
    Priors,
    _first_crossing,
    curve_kind,
    load_priors,
    conditional_calibration,
    conditional_features,
    interval_calibration,
    save_priors,
    stacking_weights,
)

N0S = (64, 128, 256)
HORIZONS = (2, 4, 8)
MODELS = ("forecaster", "flat", "power_unbounded")
TARGET_MARGIN = 0.01     # a labels-needed target lies at least 1 point above the smoothed level at N0


@dataclass(frozen=True)
class Curve:
    """One learning curve: hold-out accuracy by labeled count, on one hold-out set."""

    name: str
    dataset: str                 # the unit kept apart when priors are learned
    labels: np.ndarray
    accuracy: np.ndarray
    holdout_size: int
    n_classes: int
    correct: np.ndarray | None = None   # per-image results (points x images), where stored
    kind: str | None = None             # a product curve's kind (loop.forecast.curve_kind)


# -- sources ----------------------------------------------------------------------------------

def lcdb_curves() -> tuple[list[Curve], str]:
    """One curve per LCDB dataset and learner (outer and inner seed 0: one validation set,
    nested training sets, like a labeling project). Returns (curves, a note on the selection)."""
    import pandas as pd

    spec = importlib.util.find_spec("lcdb")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the Learning Curve Database needs the PyPI package 'lcdb' "
                         "(pip install lcdb==0.1.0)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    # Read in chunks, keeping seed 0's rows only: read whole, the table took 270 MB more.
    chunks = pd.read_csv(folder / "database-accuracy.csv", chunksize=500_000,
                         usecols=["openmlid", "learner", "size_train", "outer_seed", "inner_seed",
                                  "score_valid"])
    table = pd.concat([c[(c.outer_seed == 0) & (c.inner_seed == 0)] for c in chunks]).sort_values(
        ["openmlid", "learner", "size_train"])
    classes = pd.read_csv(folder / "datasets.csv", usecols=["openmlid", "NumberOfClasses"]
                          ).set_index("openmlid")["NumberOfClasses"].to_dict()
    curves, unknown = [], set()
    for (openmlid, learner), rows in table.groupby(["openmlid", "learner"], sort=True):
        k = classes.get(openmlid)
        if k is None or not k >= 2:
            unknown.add(openmlid)
            continue
        n = rows.size_train.to_numpy(float)
        # LCDB's validation set is 10% of the learning set (at most 5,000); the largest anchor is
        # the other 90%.
        holdout = int(min(5000, max(1, round(n.max() / 9))))
        curves.append(Curve(f"lcdb {openmlid} {learner.split('.')[-1]}", f"lcdb-{openmlid}", n,
                            rows.score_valid.to_numpy(float), holdout, int(k)))
    note = (f"LCDB: one curve per dataset and learner (outer and inner seed 0, validation score); "
            f"{len(unknown)} datasets without a class count in lcdb's datasets.csv left out")
    return curves, note


def replay_curves(folder: str | Path, holdout_size: int | None = None,
                  n_classes: int | None = None) -> tuple[list[Curve], str]:
    """Every curve.csv under `folder` (written by `python -m loop replay --out DIR`). The hold-out
    size, class count and per-image hold-out results come from the replay's database beside it
    (DIR/replay/juicer.db); without one, give `holdout_size` and `n_classes`."""
    from loop.store import Store

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"'{folder}' is not a folder; give --source lcdb or a folder of replays")
    paths = sorted(folder.rglob("curve.csv"))
    if not paths:
        raise ValueError(f"no curve.csv under '{folder}': write some with "
                         "python -m loop replay ... --out DIR")
    curves = []
    for path in paths:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("labels") and r.get("accuracy")]
        if not rows:
            continue
        labels = np.array([float(r["labels"]) for r in rows])
        accuracy = np.array([float(r["accuracy"]) for r in rows])
        database = path.parent / "replay" / "juicer.db"
        correct, holdout, k, kind = None, holdout_size, n_classes, None
        dataset = str(path.parent)
        if database.exists():
            store = Store(database)
            project = store.projects()[0]
            evaluations = store.evaluations(project["id"])
            if len(evaluations) == len(rows):
                holdout = int(evaluations[-1]["n_holdout"])
                k = len(store.classes(project["id"]))
                correct = holdout_correctness(store, project["id"], evaluations)
            dataset = Path(project["root"]).name          # the imported folder: demo-200, ...
            kind = curve_kind(json.loads(project["settings"]).get("strategy"))
        if holdout is None or k is None:
            raise ValueError(f"'{path}' has no replay database beside it; give --holdout-size "
                             "and --classes")
        curves.append(Curve(str(path.parent.relative_to(folder)), dataset, labels,
                            accuracy, int(holdout), int(k), correct, kind))
    return curves, f"{len(curves)} replay curve(s) under {folder}"


def holdout_correctness(store, project_id: int, evaluations: list[dict]) -> np.ndarray:
    """(evaluations, hold-out images) 1 where the model was right, 0 wrong, NaN not scored."""
    classes = {c["id"]: i for i, c in enumerate(store.classes(project_id))}
    results = [store.holdout_predictions(e["id"]) for e in evaluations]
    images = np.unique(np.concatenate([ids for ids, _, _ in results]))
    correct = np.full((len(results), len(images)), np.nan)
    for row, (ids, truth, probs) in enumerate(results):
        if len(ids):
            right = probs.argmax(1) == np.array([classes[c] for c in truth])
            correct[row, np.searchsorted(images, ids)] = right
    return correct


def split_datasets(curves: list[Curve], seed: int = 0) -> tuple[list[Curve], list[Curve]]:
    """(prior, scored): half the datasets, drawn at random once, teach the priors; the curves
    of the other half are scored. No dataset is in both."""
    datasets = sorted({c.dataset for c in curves})
    prior = set(np.random.default_rng(seed).permutation(datasets)[:len(datasets) // 2])
    return [c for c in curves if c.dataset in prior], [c for c in curves if c.dataset not in prior]


def subsample(curves: list[Curve], limit: int | None, seed: int = 1) -> list[Curve]:
    """At most `limit` curves, drawn deterministically."""
    if limit is None or len(curves) <= limit:
        return curves
    keep = np.sort(np.random.default_rng(seed).choice(len(curves), limit, replace=False))
    return [curves[i] for i in keep]


# -- smoothing the truth, baselines -------------------------------------------------------------

def isotonic(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted non-decreasing least-squares fit (pool adjacent violators, SciPy's: the routine
    scikit-learn's IsotonicRegression runs, exact and O(n)).

    >>> isotonic(np.array([0.5, 0.7, 0.6, 0.8]), np.ones(4)).round(2).tolist()
    [0.5, 0.65, 0.65, 0.8]
    """
    from scipy.optimize import isotonic_regression

    return isotonic_regression(np.asarray(y, dtype=float), weights=np.asarray(w, dtype=float)).x


def first_reached(labels: np.ndarray, smooth: np.ndarray, target: float) -> float | None:
    """Labeled count where a non-decreasing curve first reaches `target` (log-linear between points)."""
    above = np.flatnonzero(smooth >= target - 1e-12)
    if not len(above):
        return None
    i = above[0]
    if i == 0 or smooth[i] <= smooth[i - 1]:
        return float(labels[i])
    t = (target - smooth[i - 1]) / (smooth[i] - smooth[i - 1])
    return float(np.exp(np.log(labels[i - 1]) + t * np.log(labels[i] / labels[i - 1])))


def flat_baseline(labels, accuracy, holdout_size: int):
    """Accuracy stays at its last value, give or take the hold-out's binomial noise."""
    last = float(accuracy[np.argmax(labels)])
    half = Z80 * np.sqrt(max(last * (1 - last), 0.25 / holdout_size) / holdout_size)

    def predict(n):
        n = np.asarray(n, dtype=float)
        return np.full(n.shape, last), np.full(n.shape, last - half), np.full(n.shape, last + half)

    def needed(target):
        return float(labels.max()) if last >= target else None

    return predict, needed


def power_baseline(labels, accuracy):
    """The common recipe: acc = a * n^b by least squares (no bound, no weights), with the
    textbook interval from the fit's covariance and residual variance."""
    from scipy.optimize import curve_fit

    n, y = np.asarray(labels, float), np.asarray(accuracy, float)
    slope, intercept = np.polyfit(np.log(n), np.log(np.clip(y, 1e-3, None)), 1)
    params, cov = np.array([np.exp(intercept), slope]), np.zeros((2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            params, cov = curve_fit(lambda x, a, b: a * x ** b, n, y, p0=params, maxfev=2000)
        except (RuntimeError, ValueError):
            pass
    if not np.all(np.isfinite(cov)):
        cov = np.zeros((2, 2))
    a, b = params
    residual = y - a * n ** b
    noise = residual @ residual / max(len(n) - 2, 1)

    def predict(x):
        x = np.asarray(x, dtype=float)
        mean = a * x ** b
        grad = np.stack([x ** b, a * x ** b * np.log(x)], -1)
        half = Z80 * np.sqrt(np.einsum("...i,ij,...j->...", grad, cov, grad) + noise)
        return mean, mean - half, mean + half

    def needed(target):
        if a * n.max() ** b >= target:
            return float(n.max())
        if b <= 0 or a <= 0:
            return None
        with np.errstate(over="ignore"):
            value = (target / a) ** (1 / b)
        return float(value) if value <= FAR else None

    return predict, needed


# -- fitting truncated curves, learning the priors, scoring -------------------------------------

@dataclass
class Truncated:
    """A curve cut at N0 and the forecaster fitted to what was seen by then."""

    curve: Curve
    n0: int
    labels: np.ndarray
    accuracy: np.ndarray
    forecaster: LearningCurveForecaster


def _at(curve: Curve, n: float) -> int | None:
    """Index of the curve's point at labeled count n (nearest, within a quarter doubling)."""
    distance = np.abs(np.log2(curve.labels / n))
    i = int(np.argmin(distance))
    return i if distance[i] <= 0.25 else None


def _seen(curve: Curve, n0: float) -> np.ndarray | None:
    """The points seen by N0 (a mask), or None where a fit there is not tried: fewer than 3
    labeled counts by then, or no point near N0."""
    keep = curve.labels <= n0 * (1 + 1e-9)
    if len(np.unique(curve.labels[keep])) < 3 or _at(curve, n0) is None:
        return None
    return keep


def curve_fits(curve: Curve, n0s=N0S, priors: Priors | None = None,
               n_boot: int = 100) -> list[Truncated]:
    """Fit the forecaster on the curve's points up to each N0 (where there are 3 or more), with
    the fit settings of `priors` (default: the code's, not the shipped file's, so that the LCDB
    backtest and learned priors never depend on priors learned earlier)."""
    priors = Priors() if priors is None else priors
    out = []
    for n0 in n0s:
        keep = _seen(curve, n0)
        if keep is None:
            continue
        correct = curve.correct[keep] if curve.correct is not None else None
        try:
            f = LearningCurveForecaster(curve.n_classes, curve.holdout_size, n_boot=n_boot,
                                        priors=priors).fit(curve.labels[keep], curve.accuracy[keep],
                                                           correct)
        except ValueError:
            continue
        out.append(Truncated(curve, n0, curve.labels[keep], curve.accuracy[keep], f))
    return out


def truncated_fits(curves: list[Curve], n0s=N0S, priors: Priors | None = None,
                   n_boot: int = 100) -> list[Truncated]:
    """`curve_fits` of every curve, in one list (held in memory: about 0.75 MB a fit)."""
    return [t for curve in curves for t in curve_fits(curve, n0s, priors, n_boot)]


def scorable(curve: Curve, n0: float, horizons=HORIZONS) -> bool:
    """Whether the backtest can score the curve from N0: a fit is tried there and the curve has
    a later point near one of the horizons (without fitting anything)."""
    keep = _seen(curve, n0)
    return keep is not None and any(
        True for _ in horizon_points(Truncated(curve, n0, curve.labels[keep], curve.accuracy[keep],
                                               None), horizons))


def unscored_reasons(curves: list[Curve], n0s, horizons=HORIZONS) -> tuple[list[str], str | None]:
    """(a line per N0 no curve can be scored from, the reason nothing can be scored or None).
    A curve is scored from N0 when it has 3+ points up to N0, one near N0 (within a quarter
    doubling) and a later one near 2x, 4x or 8x N0."""
    if not curves:
        return [], "there are no curves to score"
    longest = max(float(c.labels.max()) for c in curves)
    missing = [n0 for n0 in n0s if not any(scorable(c, n0, horizons) for c in curves)]
    rule = (f"a curve is scored from N0 when it has 3+ points up to N0, one near N0 and a later "
            f"one near {', '.join(f'{h}x' for h in horizons[:-1])} or {horizons[-1]}x N0")
    lines = [f"N0={n0}: no curve is scored from here ({rule}; the longest reaches {longest:,g} "
             f"labels)" for n0 in missing]
    if len(missing) < len(n0s):
        return lines, None
    # Powers of two the curves can be scored from, the largest first: a starting point to try.
    candidates = [2 ** k for k in range(int(np.log2(max(longest, 1))), 1, -1)
                  if any(scorable(c, 2 ** k, horizons) for c in curves)][:3]
    fix = (f"; try --n0 {' '.join(map(str, sorted(candidates)))}" if candidates else
           "; these curves are too short for any N0: replay with a larger --budget")
    start = "N0=" + (str(n0s[0]) if len(n0s) == 1 else f"{', '.join(map(str, n0s[:-1]))} or {n0s[-1]}")
    return lines, (f"no curve has points beyond {start} to score ({rule}): the longest reaches "
                   f"{longest:,g} labels{fix}")


# The curve features the learned forecast's gain also weighs (loop.forecast.CONDITIONAL_FEATURES);
# on LCDB (cross-fitted, N0 128, 4x; experiments on the fits kept in arrays) they took the mean
# absolute error 4.40 -> 4.35 points and, with the interval's scale growing with the forecast gain
# and the families' disagreement, the width 12.8 -> 12.6 at the same coverage.
CONDITIONAL = ("slope", "headroom", "chance", "one")


def learn_priors(fits: Iterable[Truncated], source: str = "LCDB",
                 conditional: Sequence[str] = CONDITIONAL) -> Priors:
    """Stacking weights and interval calibration at each horizon ratio of the priors, from
    forecasters fitted to truncated curves and the points that came later on those curves.
    `fits` is a list or anything else with a length that can be iterated more than once (such as
    SpilledFits); it is read three times, in the same order each time. `conditional`: the curve
    features (CONDITIONAL_FEATURES) the gain also weighs, and then the interval's scale grows
    with the gain and the families' disagreement; empty, the fixed mix of families alone."""
    conditional = tuple(conditional)
    if len(fits) < 50:
        raise ValueError(f"learning priors needs at least 50 truncated curves, got {len(fits)}")
    base, truths, chances, values, datasets_of = None, [], [], [], []
    for t in fits:
        if base is None:
            base = t.forecaster.priors
            ratios = np.array(base.ratios)
        truths.append([np.nan if i is None else t.curve.accuracy[i]
                       for i in (_at(t.curve, r * t.forecaster.n_max_) for r in ratios)])
        chances.append(t.forecaster.chance_)
        values.append(t.forecaster.family_values(t.forecaster.n_max_ * np.r_[0.5, 1.0, ratios])[0])
        datasets_of.append(t.curve.dataset)
    truths, chances = np.array(truths), np.array(chances)
    values = np.stack(values)                                    # (fits, families, 2 + ratios)
    half, level = values[:, :, 0].mean(1), values[:, :, 1].mean(1)
    extra = np.stack([conditional_features(conditional, level[i:i + 1, None], half[i:i + 1, None],
                                           ratios, chances[i])[0] for i in range(len(level))]
                     ) if conditional else np.zeros((len(level), len(ratios), 0))  # (fits, ratios, E)

    def stack(rows: np.ndarray) -> tuple:
        weights, extra_weights = [], []
        for k in range(len(ratios)):
            known = rows & ~np.isnan(truths[:, k])
            if known.sum() < 10:
                raise ValueError(f"learning priors needs curves measured at {ratios[k]:g}x their "
                                 f"largest fitted count; only {known.sum()} of {rows.sum()} "
                                 f"truncated curves are")
            gains = np.hstack([values[known, :, k + 2] - level[known, None], extra[known, k]])
            w = stacking_weights(gains, truths[known, k] - level[known], free=len(conditional))
            weights.append(tuple(round(float(v), 4) for v in w[:values.shape[1]]))
            extra_weights.append(tuple(round(float(v), 4) for v in w[values.shape[1]:]))
        zeros = (0.0,) * len(ratios)
        return dataclasses.replace(base, weights=tuple(weights), spread_floor=zeros,
                                   quantiles=((-Z80, Z80),) * len(ratios),
                                   extra_features=conditional,
                                   extra_weights=tuple(extra_weights) if conditional else (),
                                   spread_gain=(), spread_disagreement=())

    # The interval is calibrated on residuals out of sample for the weights (cross-fitted over
    # two folds of datasets), so the weights' fit to these very curves does not narrow it.
    datasets = sorted(set(datasets_of))
    fold_of = dict(zip(datasets, np.random.default_rng(1).permutation(len(datasets)) % 2))
    fold = np.array([fold_of[d] for d in datasets_of])
    by_fold = {f: stack(fold != f) for f in (0, 1)}
    center, spread = np.empty(truths.shape), np.empty(truths.shape)
    gain, disagreement = np.empty(truths.shape), np.empty(truths.shape)
    for i, t in enumerate(fits):
        f = t.forecaster.recalibrated(by_fold[fold[i]])
        x, grid = np.log(ratios * f.n_max_), np.log(f.grid_)
        center[i] = np.interp(x, grid, f.center_)
        spread[i] = np.interp(x, grid, np.hypot(f.boot_sd_, f.noise_sd_))
        gain[i] = np.interp(x, grid, f.gain_)
        disagreement[i] = np.interp(x, grid, f.disagreement_)
    priors = stack(np.ones(len(fits), bool))
    floors, quantiles, gains, disagreements = [], [], [], []
    for k in range(len(ratios)):
        known = ~np.isnan(truths[:, k])
        if conditional:
            floor, g, d, low, high = conditional_calibration(
                center[known, k], spread[known, k], truths[known, k], chances[known],
                gain[known, k], disagreement[known, k])
            gains.append(round(g, 4))
            disagreements.append(round(d, 4))
        else:
            floor, low, high = interval_calibration(center[known, k], spread[known, k],
                                                    truths[known, k], chances[known])
        floors.append(round(floor, 4))
        quantiles.append((round(low, 4), round(high, 4)))
    priors = dataclasses.replace(priors, spread_floor=tuple(floors), quantiles=tuple(quantiles),
                                 spread_gain=tuple(gains), spread_disagreement=tuple(disagreements))
    family, shift = learn_labels_shift(fits, priors)
    return dataclasses.replace(priors, labels_family=family, labels_shift=shift,
                               learned_on=f"{len(fits)} truncated curves of {len(datasets)} {source} "
                                          f"datasets")


LABELS_SHIFTS = np.linspace(0, 1, 9)
# Only the error power law itself: its grid average ("pow2_avg", shift 0.625) did a little better
# on LCDB (false "not reachable" 8.8% against 10.7% at N0 128, 4x) but much worse on replays of
# the product's own loop (labels within 2x 30% against 65%, false "not reachable" 13% against 0%).
LABELS_FAMILIES = ("pow2",)


def learn_labels_shift(fits: Iterable[Truncated], priors: Priors, horizons=HORIZONS,
                       max_false_unreachable: float = 0.1) -> tuple[str, float]:
    """The error power law family and the shift towards it (Priors.labels_family, labels_shift)
    whose labels-needed forecasts fell within 2x of the truth most often on these curves, among
    those that said "not reachable" of a target that was reached at most `max_false_unreachable`
    of the time (the least often, if none does)."""
    candidates = [f for f in LABELS_FAMILIES if f in priors.families]
    ratios = {(family, shift): [] for family in candidates for shift in LABELS_SHIFTS}
    for t in fits:
        targets = labels_targets(t, horizons)
        if not targets:
            continue
        f = t.forecaster.recalibrated(priors)
        values = f.family_values(f.grid_)[0]
        for family in candidates:
            power = values[list(priors.families).index(family)]
            for shift in LABELS_SHIFTS:
                curve = np.maximum.accumulate(np.clip(f.center_ + shift * (power - f.center_),
                                                      f.chance_, 1.0))
                for target, reached in targets:
                    guess = _first_crossing(f.grid_, curve, target)
                    ratios[family, shift].append(np.inf if guess is None else np.log2(guess / reached))
    if not candidates or not ratios[candidates[0], 0.0]:
        return priors.labels_family, 0.0
    scores = {k: (np.mean(np.abs(r) <= 1), np.mean(np.isinf(r))) for k, r in ratios.items()}
    allowed = [k for k, (_, unreachable) in scores.items() if unreachable <= max_false_unreachable]
    best = (min(scores, key=lambda k: scores[k][1]) if not allowed
            else max(allowed, key=lambda k: scores[k][0]))
    return best[0], float(best[1])


# -- the interval per curve kind, learned on the product's own replays ----------------------------

KIND_MIN_EXAMPLES = 20    # scored horizon points a curve kind needs before its interval is learned
KIND_SCALE_BOUNDS = (0.2, 5.0)


def source_of(dataset: str) -> str:
    """The images a replayed dataset is drawn from (its folder name's first word), the unit kept
    apart when intervals are learned on replays: sets cut from the same images count as one.

    >>> source_of("fashion-mnist-200"), source_of("fashion-tops-200"), source_of("mnist5k-200")
    ('fashion', 'fashion', 'mnist5k')
    """
    return Path(dataset).name.split("-")[0]


def interval_needs(t: Truncated, horizons=HORIZONS) -> list[tuple[float, float]]:
    """(horizon ratio, factor) for each scored horizon point of `t`: how many times its 80%
    interval (that of the priors it was fitted with) the measured accuracy there lies from the
    forecast, on its side (at most 1: inside the interval)."""
    f = t.forecaster
    out = []
    for _, i, _, _ in horizon_points(t, horizons):
        n, truth = t.curve.labels[i], t.curve.accuracy[i]
        mean, low, high = f.predict(n)
        half = high - mean if truth >= mean else mean - low
        out.append((n / f.n_max_, abs(truth - mean) / half if half > 0 else np.inf))
    return out


def learn_kind_scales(needs: Iterable[tuple[str, float, float]], ratios: Sequence[float],
                      coverage: float = 0.8, min_examples: int = KIND_MIN_EXAMPLES
                      ) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """((kind, scale per ratio), ...) from `needs` (kind, horizon ratio, factor of
    `interval_needs`): at each ratio, the split-conformal quantile of the factors (the
    ceil((n + 1) x coverage)-th smallest), so the scaled interval holds `coverage` of such truths;
    a ratio with fewer than 5 examples takes its nearest ratio's scale. A kind with fewer than
    `min_examples` points gets none (LCDB's interval stays).

    >>> needs = [("random", 2.0, v) for v in np.linspace(0.05, 1.0, 40)]
    >>> learn_kind_scales(needs, (2.0, 4.0))
    (('random', (0.8295, 0.8295)),)
    """
    knots = np.log2(np.asarray(ratios, dtype=float))
    table = []
    for kind in sorted({k for k, _, _ in needs if k}):
        rows = [(r, v) for k, r, v in needs if k == kind]
        if len(rows) < min_examples:
            continue
        at = np.array([int(np.argmin(np.abs(knots - np.log2(r)))) for r, _ in rows])
        values = np.array([v for _, v in rows])
        scales: list[float | None] = []
        for j in range(len(knots)):
            v = np.sort(values[at == j])
            q = min(len(v), int(np.ceil((len(v) + 1) * coverage))) - 1
            scales.append(float(np.clip(v[q], *KIND_SCALE_BOUNDS)) if len(v) >= 5 else None)
        filled = [j for j, v in enumerate(scales) if v is not None]
        if not filled:
            continue
        table.append((kind, tuple(round(scales[min(filled, key=lambda f: abs(f - j))], 4)
                                  for j in range(len(knots)))))
    return tuple(table)


def learn_kind_scales_n0(needs: Iterable[tuple[str, float, float, float]], ratios: Sequence[float],
                         coverage: float = 0.8, min_examples: int = KIND_MIN_EXAMPLES, n0s=N0S
                         ) -> tuple[tuple[str, float, tuple[float, ...]], ...]:
    """((kind, n, scale per ratio), ...) from `needs` (kind, n, horizon ratio, factor; n: the
    largest labeled count of the fit): `learn_kind_scales` on each starting point's points alone
    (the points of fits up to the same N0 of `n0s`: the smallest at or above their n), for the
    (kind, N0) pairs with `min_examples` points or more, placed at the geometric mean of their n.

    >>> needs = [("random", n, 2.0, v * n / 60) for n in (60, 120) for v in np.linspace(0.05, 1.0, 40)]
    >>> learn_kind_scales_n0(needs, (2.0,))
    (('random', 60.0, (0.8295,)), ('random', 120.0, (1.659,)))
    """
    needs = list(needs)
    knots = sorted(n0s)
    block = lambda n: next((k for k in knots if k >= n), knots[-1])
    table = []
    for n0 in knots:
        rows = [(k, n, r, v) for k, n, r, v in needs if block(n) == n0]
        for kind, scales in learn_kind_scales([(k, r, v) for k, _, r, v in rows], ratios,
                                              coverage, min_examples):
            at = float(np.exp(np.mean(np.log([n for k, n, _, _ in rows if k == kind]))))
            table.append((kind, round(at, 1), scales))
    return tuple(sorted(table))


def kind_priors(priors: Priors, needs: Iterable[tuple[str, float, float, float]]) -> Priors:
    """`priors` with the intervals per curve kind learned from `needs` (kind, n, horizon ratio,
    factor): per horizon (`learn_kind_scales`) and per starting point (`learn_kind_scales_n0`)."""
    needs = list(needs)
    return dataclasses.replace(
        priors, kind_scales=learn_kind_scales([(k, r, v) for k, _, r, v in needs], priors.ratios),
        kind_scales_n0=learn_kind_scales_n0(needs, priors.ratios))


def replay_interval_needs(curves: list[Curve], priors: Priors, n0s=N0S, n_boot: int = 100,
                          track: Progress | None = None) -> list[tuple[str, str, float, float, float]]:
    """(source, kind, n, horizon ratio, factor) of every scored horizon point of the curves,
    each fitted up to each N0 with `priors` (n: the largest labeled count that fit saw, where a
    project reads its interval), against their interval."""
    out = []
    for curve in (track.over(curves, "fitting the curves intervals are learned on", len(curves))
                  if track else curves):
        for t in curve_fits(curve, n0s, priors=priors, n_boot=n_boot):
            out += [(source_of(curve.dataset), curve.kind, t.forecaster.n_max_, r, v)
                    for r, v in interval_needs(t)]
    return out


def horizon_points(t: Truncated, horizons=HORIZONS):
    """For each horizon the curve has a later point at: (horizon, index of that point, target,
    labels at which the smoothed curve first reached the target, or None where it is not scored).
    The target is the smoothed (isotonic, binomially weighted) curve's value at horizon x N0,
    scored only where it lies TARGET_MARGIN or more above the smoothed value at N0."""
    curve = t.curve
    smooth = smoothed(curve)
    now = _at(curve, t.n0)
    for h in horizons:
        i = _at(curve, h * t.n0)
        if i is None or curve.labels[i] <= t.labels.max():
            continue
        target = float(smooth[i])
        reached = (first_reached(curve.labels, smooth, target)
                   if target >= smooth[now] + TARGET_MARGIN else None)
        yield h, i, target, reached


def labels_targets(t: Truncated, horizons=HORIZONS) -> list[tuple[float, float]]:
    """(target, labels at which the smoothed curve first reached it) for the scored horizons."""
    return [(target, reached) for _, _, target, reached in horizon_points(t, horizons)
            if reached is not None]


def smoothed(curve: Curve) -> np.ndarray:
    """The curve made non-decreasing, each point weighted by its binomial hold-out precision."""
    p = np.clip(curve.accuracy, 0.5 / curve.holdout_size, 1 - 0.5 / curve.holdout_size)
    return isotonic(curve.accuracy, curve.holdout_size / (p * (1 - p)))


UNSCALED = "forecaster_lcdb"   # beside a kind's interval: the same forecast, LCDB's interval


def backtest(scored: Iterable[tuple[Iterable[Truncated], Priors | Callable[[Curve, float], Priors]]],
             horizons=HORIZONS) -> dict:
    """Per (N0, horizon) and model: errors, interval hits and widths at the measured accuracy, and
    labels-needed outcomes against the smoothed curve. Each group of fits is recalibrated with the
    priors beside it (learned elsewhere), or with those a function gives for each curve (its
    kind's interval, `Priors.for_kind`: then the row UNSCALED scores the same forecasts with the
    interval of the priors they were fitted with)."""
    records: dict = {}
    for fits, priors in scored:
        for t in fits:
            _score(t, priors, horizons, records)
    return {f"n0_{n0}_h{h}": {name: summarize(records[(n0, h)][name])
                              for name in (*MODELS, UNSCALED) if name in records[(n0, h)]}
            for n0, h in sorted(records)}


def _score(t: Truncated, priors: Priors | Callable[[Curve, float], Priors], horizons, records: dict) -> None:
    curve = t.curve
    # read at the largest labeled count the fit saw, as a project's forecast reads it
    f = t.forecaster.recalibrated(priors(curve, t.forecaster.n_max_) if callable(priors) else priors)
    models = {"forecaster": (f.predict, f.labels_needed),
              "flat": flat_baseline(t.labels, t.accuracy, curve.holdout_size),
              "power_unbounded": power_baseline(t.labels, t.accuracy)}
    if callable(priors):    # the fit as it stands: the interval of the priors it was fitted with
        models[UNSCALED] = (t.forecaster.predict, t.forecaster.labels_needed)
    for h, i, target, reached in horizon_points(t, horizons):
        truth = curve.accuracy[i]
        for name, (predict, needed) in models.items():
            mean, low, high = (float(np.ravel(v)[0]) for v in predict([curve.labels[i]]))
            r = records.setdefault((t.n0, h), {m: {"error": [], "hit": [], "width": [], "ratio": [],
                                                   "holdout": []} for m in models})[name]
            r["error"].append(mean - truth)
            r["hit"].append(low <= truth <= high)
            r["width"].append(high - low)
            r["holdout"].append(curve.holdout_size)
            if reached is not None:
                guess = needed(target)
                if isinstance(guess, LabelsNeeded):     # the forecaster's answer has an interval
                    low = guess.low if guess.low is not None else np.inf
                    high = guess.high if guess.high is not None else np.inf
                    r.setdefault("labels_hit", []).append(low <= reached <= high)
                    guess = guess.labels
                r["ratio"].append(np.inf if guess is None else np.log2(guess / reached))


HOLDOUT_BANDS = ((1, 100), (100, 300), (300, 1000), (1000, 5001))


def summarize(r: dict) -> dict:
    error, ratio = np.array(r["error"]), np.array(r["ratio"])
    if not len(error):
        return {"n": 0}
    out = {"n": len(error), "mae": round(100 * float(np.mean(np.abs(error))), 3),
           "bias": round(100 * float(np.mean(error)), 3),
           "coverage80": round(float(np.mean(r["hit"])), 4),
           "width80": round(100 * float(np.mean(r["width"])), 3), "targets": len(ratio)}
    if len(ratio):
        out.update(within2x=round(float(np.mean(np.abs(ratio) <= 1)), 4),
                   median_abs_log2=round(float(np.median(np.abs(ratio))), 3),
                   false_unreachable=round(float(np.mean(np.isinf(ratio))), 4))
    if r.get("labels_hit"):
        out["labels_coverage80"] = round(float(np.mean(r["labels_hit"])), 4)
    hit, holdout = np.array(r["hit"]), np.array(r["holdout"])
    out["coverage80_by_holdout"] = {f"{lo}-{hi - 1}": round(float(hit[(holdout >= lo) & (holdout < hi)].mean()), 3)
                                    for lo, hi in HOLDOUT_BANDS if np.any((holdout >= lo) & (holdout < hi))}
    return out


def print_report(results: dict, lines: list[str], log=print) -> None:
    for line in lines:
        log(line)
    log("")
    log("accuracy at the horizon against the measured hold-out accuracy there (points); labels needed "
        "to reach the smoothed curve's value there")
    head = (f"{'N0':>4} {'horizon':>7} {'model':<16} {'curves':>6} {'MAE':>6} {'bias':>6} "
            f"{'cover80':>7} {'width80':>7} | {'targets':>7} {'within2x':>8} {'med|log2|':>9} "
            f"{'false unreach.':>14}")
    log(head)
    log("-" * len(head))
    for key, models in results.items():
        n0, h = key[3:].split("_h")
        for name, s in models.items():
            if not s.get("n"):
                log(f"{n0:>4} {h + 'x':>7} {name:<16} {0:>6}")
                continue
            labels = (f"{s['targets']:>7} {s['within2x']:>8.0%} {s['median_abs_log2']:>9.2f} "
                      f"{s['false_unreachable']:>14.0%}" if s.get("targets") else f"{0:>7}")
            log(f"{n0:>4} {h + 'x':>7} {name:<16} {s['n']:>6} {s['mae']:>6.2f} {s['bias']:>+6.2f} "
                f"{s['coverage80']:>7.0%} {s['width80']:>7.2f} | {labels}")
    log("")
    log("forecaster's 80% coverage by hold-out size (images):")
    for key, models in results.items():
        by_size = models["forecaster"].get("coverage80_by_holdout", {})
        log(f"  {key:<11} " + "  ".join(f"{band}: {value:.0%}" for band, value in by_size.items()))
    log("")
    log("forecaster's labels needed: share of truths inside its 80% interval")
    log("  " + "  ".join(f"{key}: {models['forecaster']['labels_coverage80']:.0%}"
                         for key, models in results.items()
                         if "labels_coverage80" in models["forecaster"]))


# -- fits kept on disk between passes, progress ------------------------------------------------

def _packed(t: Truncated) -> Truncated:
    """`t` with its forecaster's grid-row parameters stored sparsely where most are zero (the
    families without an average put all weight on one grid row); `_unpacked` restores them
    exactly."""
    f = copy.copy(t.forecaster)
    f.params_ = {name: (c, _pack(a)) for name, (c, a) in f.params_.items()}
    return dataclasses.replace(t, forecaster=f)


def _unpacked(t: Truncated) -> Truncated:
    t.forecaster.params_ = {name: (c, _unpack(a)) for name, (c, a) in t.forecaster.params_.items()}
    return t


def _pack(a: np.ndarray):
    nonzero = np.flatnonzero(a)
    return a if 2 * len(nonzero) >= a.size else (a.shape, nonzero.astype(np.int32), a.flat[nonzero])


def _unpack(packed) -> np.ndarray:
    if isinstance(packed, np.ndarray):
        return packed
    shape, nonzero, values = packed
    a = np.zeros(shape, dtype=values.dtype)
    a.flat[nonzero] = values
    return a


class SpilledFits:
    """Truncated fits written to an anonymous temporary file as they are made, one record per
    curve, and read back one curve at a time, in the order added, as often as needed. The LCDB
    backtest makes about 10,000 fits of 0.75 MB each (the bootstrap replicates' parameters) and
    reads each four times; kept in lists they held 11.8 GB. On disk a fit takes about 0.43 MB
    (all of LCDB: 4.3 GB, in the temporary folder, $TMPDIR or /tmp, gone when the run ends).

    >>> with SpilledFits() as fits:
    ...     fits.add([]); (len(fits), fits.curves, list(fits))
    (0, 1, [])
    """

    def __init__(self, folder: str | Path | None = None):
        # Unlinked at once: closed by close() or the context, or freed when the process ends.
        self._file = tempfile.TemporaryFile(prefix="juicer-backtest-", dir=folder)  # noqa: SIM115
        self._records: list[tuple[int, int]] = []        # (offset, size) of each curve's fits
        self._fits = 0

    def add(self, fits: list[Truncated]) -> None:
        data = pickle.dumps([_packed(t) for t in fits], protocol=pickle.HIGHEST_PROTOCOL)
        self._records.append((self._file.seek(0, os.SEEK_END), len(data)))
        self._file.write(data)
        self._fits += len(fits)

    def groups(self) -> Iterator[list[Truncated]]:
        """Each curve's fits (a list, maybe empty), in the order they were added."""
        for offset, size in self._records:
            self._file.seek(offset)           # every read seeks: passes may interleave
            yield [_unpacked(t) for t in pickle.loads(self._file.read(size))]

    def __iter__(self) -> Iterator[Truncated]:
        for group in self.groups():
            yield from group

    def __len__(self) -> int:
        return self._fits

    @property
    def curves(self) -> int:
        return len(self._records)

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self._records)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _duration(seconds: float) -> str:
    """
    >>> _duration(42.4), _duration(185), _duration(7300)
    ('42 s', '3 min 05 s', '2 h 01 min')
    """
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


# What one curve costs in each pass, relative to fitting it (measured on 200 LCDB curves): the
# estimate of the time left weighs the work done and to do by these.
FIT_COST = 1.0
PRIOR_PASSES = (("the points' values", 0.02), ("calibrating", 0.5), ("labels shift", 0.5))
SCORE_COST = 0.5


class Progress:
    """A line every `every` seconds while the backtest works (to stderr unless `log` is given):
    the pass, its curves done of its total, the time elapsed, and the time left for the whole
    run, estimated from the work done so far (`total`, in units of FIT_COST per curve)."""

    def __init__(self, total: float, log: Callable[[str], None] | None = None, every: float = 10.0):
        self.total, self.done, self.every = float(total), 0.0, every
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.started = self._last = time.perf_counter()

    def over(self, items: Iterable, what: str, count: int, cost: float = FIT_COST) -> Iterator:
        """`items` (`count` curves, or their fits' groups) with a line now and then."""
        for done, item in enumerate(items, 1):
            yield item                       # the caller's work on it happens here
            self.done += cost
            now = time.perf_counter()
            if now - self._last >= self.every:
                self._last = now
                elapsed = now - self.started
                left = elapsed * max(self.total - self.done, 0.0) / max(self.done, 1e-9)
                self.log(f"backtest-forecast: {what}: {done:,}/{count:,} curves "
                         f"({min(self.done / self.total, 1):.0%} of the work), {_duration(elapsed)} "
                         f"elapsed, about {_duration(left)} left")

    def passes(self, fits: SpilledFits, what: str, steps) -> _Passes:
        """`fits` to hand to a function that reads them once per step of `steps` ((name, cost),
        in the order it reads them)."""
        return _Passes(fits, self, what, iter(steps))


@dataclass
class _Passes:
    fits: SpilledFits
    progress: Progress
    what: str
    steps: Iterator[tuple[str, float]]

    def __len__(self) -> int:
        return len(self.fits)

    def __iter__(self) -> Iterator[Truncated]:
        step, cost = next(self.steps, ("reading again", 0.0))
        for group in self.progress.over(self.fits.groups(),
                                        f"{self.what}, {step}" if step else self.what,
                                        self.fits.curves, cost):
            yield from group


def one_blas_thread():
    """A context in which numpy's matrix products use one thread. The forecaster's are small
    (101 x 160 by 160 x 480): on 2 cores busy with other work, OpenBLAS's threads waited on each
    other and one took 22 ms instead of 1.2 ms; the products' results are the same."""
    try:
        from threadpoolctl import threadpool_limits  # comes with scikit-learn
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _starting_points(n0s) -> tuple[int, ...]:
    n0s = tuple(sorted({int(n) for n in n0s}))
    if not n0s:
        raise ValueError("give one or more starting points N0 (--n0 64 128 256)")
    if n0s[0] < 1:
        raise ValueError(f"a starting point N0 is a labeled count of 1 or more, got {n0s[0]}")
    return n0s


def run(source: str, as_json: bool = False, max_curves: int | None = 1600, n_boot: int = 100,
        holdout_size: int | None = None, n_classes: int | None = None, n0s=N0S, log=print,
        progress: Callable[[str], None] | None = None, calibrate_on: str | None = None) -> dict:
    """The `backtest-forecast` command. LCDB: the datasets fall in two halves; priors learned on
    one half score the other, and the other way round (every curve scored by priors that never saw
    its dataset). A folder of replays: scored with the shipped priors (learned on LCDB), each
    curve with its kind's interval (`Priors.for_kind`; the row forecaster_lcdb: LCDB's); with
    `calibrate_on` (another folder of replays), the kinds' intervals are learned on those
    replays instead, leaving out for each scored curve those of its own source of images. `n0s`:
    the starting points (labeled counts) each curve is fitted up to, for the priors learned and
    the scores. The fits wait on disk between passes (SpilledFits); `progress` gets a line now and
    then (default: stderr). A ValueError says why when no curve can be scored from any N0."""
    started = time.perf_counter()
    n0s = _starting_points(n0s)
    lines = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(one_blas_thread())
        if source == "lcdb":
            curves, note = lcdb_curves()
            kept = subsample(curves, max_curves)
            halves = split_datasets(kept)
            lines.append(f"{note}: {len(curves)} curves of {len({c.dataset for c in curves})} datasets"
                         + (f", {len(kept)} of them drawn at random (fixed seed) to keep this quick"
                            if len(kept) < len(curves) else ""))
            lines.append(f"two halves by dataset ({len({c.dataset for c in halves[0]})} and "
                         f"{len({c.dataset for c in halves[1]})} datasets): priors learned on one "
                         f"half score the other, both ways")
            lines += _scorable_or_raise(kept, n0s)
            cost = FIT_COST + sum(c for _, c in PRIOR_PASSES) + SCORE_COST
            track = Progress(cost * len(kept), progress)
            fits = [stack.enter_context(SpilledFits()) for _ in halves]
            for i, (half, spilled) in enumerate(zip(halves, fits)):
                for curve in track.over(half, f"half {i + 1} of 2, fitting", len(half)):
                    spilled.add(curve_fits(curve, n0s, n_boot=n_boot))
            priors = [learn_priors(track.passes(spilled, f"half {i + 1} of 2, learning priors",
                                                PRIOR_PASSES))
                      for i, spilled in enumerate(fits)]
            scored = [(track.passes(fits[1], "half 2 of 2, scoring with half 1's priors",
                                    [("", SCORE_COST)]), priors[0]),
                      (track.passes(fits[0], "half 1 of 2, scoring with half 2's priors",
                                    [("", SCORE_COST)]), priors[1])]
        else:
            kept, note = replay_curves(source, holdout_size, n_classes)
            lines.append(f"{note}; shipped priors, learned on {DEFAULT_PRIORS.learned_on}")
            lines += _scorable_or_raise(kept, n0s)
            train = replay_curves(calibrate_on)[0] if calibrate_on else []
            track = Progress((FIT_COST + SCORE_COST) * len(kept) + FIT_COST * len(train), progress)
            if calibrate_on:
                needs = replay_interval_needs(train, DEFAULT_PRIORS, N0S, n_boot, track)
                by_source: dict[str, Priors] = {}

                def priors_for(curve: Curve, n0: float) -> Priors:
                    own = source_of(curve.dataset)
                    if own not in by_source:
                        by_source[own] = kind_priors(
                            DEFAULT_PRIORS, [(k, n, r, v) for src, k, n, r, v in needs if src != own])
                    return by_source[own].for_kind(curve.kind, n0)
                lines.append(f"intervals per curve kind learned on {len(train)} replay curve(s) under "
                             f"{calibrate_on} ({', '.join(sorted({c.dataset for c in train}))}), "
                             "leaving out for each scored curve those of its own source of images")
            else:
                def priors_for(curve: Curve, n0: float) -> Priors:
                    return DEFAULT_PRIORS.for_kind(curve.kind, n0)
                lines.append(f"intervals per curve kind learned on {DEFAULT_PRIORS.kinds_learned_on}"
                             if DEFAULT_PRIORS.kind_scales else
                             "no interval per curve kind in the shipped priors: LCDB's for all")
            fits = stack.enter_context(SpilledFits())
            for curve in track.over(kept, "fitting", len(kept)):
                fits.add(curve_fits(curve, n0s, priors=DEFAULT_PRIORS, n_boot=n_boot))
            scored = [(track.passes(fits, "scoring", [("", SCORE_COST)]), priors_for)]
        results = backtest(scored)
    lines.append(f"truth: the measured accuracy at the horizon; flat: the last accuracy, interval "
                 f"+-{Z80:.2f} binomial sd; power_unbounded: a*n^b least squares, interval from its "
                 "covariance")
    lines.append(f"labels needed: target = the smoothed (isotonic) curve at the horizon, scored when "
                 f"{TARGET_MARGIN * 100:g}+ points above its level at N0; 'not reachable' = the "
                 f"forecast stays below it up to {FAR:,} labels")
    lines.append(f"{time.perf_counter() - started:.0f} s")
    print_report(results, lines, log)
    if as_json:
        log(json.dumps(results))
    return results


def _scorable_or_raise(curves: list[Curve], n0s) -> list[str]:
    """Lines naming the N0s no curve can be scored from; a ValueError saying why (and which N0 to
    try) when that is all of them, before any fitting."""
    lines, nothing = unscored_reasons(curves, n0s)
    if nothing:
        raise ValueError(nothing)
    return lines


def learn_shipped_priors(path: str | Path = PRIORS_FILE, max_curves: int | None = None,
                         n_boot: int = 100, log=print) -> Priors:
    """Learn priors on every LCDB curve and save them where DEFAULT_PRIORS is read from (the
    backtest itself only ever scores a curve with priors learned on the other half of the
    datasets, so this does not change its figures)."""
    curves, note = lcdb_curves()
    kept = subsample(curves, max_curves)
    track = Progress((FIT_COST + sum(c for _, c in PRIOR_PASSES)) * len(kept))
    with one_blas_thread(), SpilledFits() as fits:
        for curve in track.over(kept, "fitting", len(kept)):
            fits.add(curve_fits(curve, n_boot=n_boot))
        priors = learn_priors(track.passes(fits, "learning priors", PRIOR_PASSES))
    before = load_priors(path)
    if before.kind_scales:    # learned against the interval just replaced: kept, to be relearned
        priors = dataclasses.replace(priors, kind_scales=before.kind_scales,
                                     kind_scales_n0=before.kind_scales_n0,
                                     kinds_learned_on=before.kinds_learned_on)
        log("kept the intervals per curve kind, learned against the previous priors: relearn them "
            "with python -m loop backtest-forecast --source DIR --learn")
    save_priors(priors, path)
    log(f"{note}; priors learned on {priors.learned_on}, written to {path}")
    return priors


def learn_kind_priors(folder: str | Path, path: str | Path = PRIORS_FILE, n_boot: int = 100,
                      log=print) -> Priors:
    """Learn the interval of each curve kind (`learn_kind_scales`) on the replays under `folder`
    against the priors in `path`, and save them there (the forecast itself is unchanged)."""
    priors = load_priors(path)
    curves, note = replay_curves(folder)
    with one_blas_thread():
        needs = replay_interval_needs(curves, priors, N0S, n_boot, Progress(FIT_COST * len(curves)))
    learned = kind_priors(priors, [(k, n, r, v) for _, k, n, r, v in needs])
    scales, by_n0 = learned.kind_scales, learned.kind_scales_n0
    if not scales:
        raise ValueError(f"{note}: too few scored points to learn an interval for any curve kind "
                         f"(each needs {KIND_MIN_EXAMPLES}); replay with a larger --budget")
    kinds = {k: sum(c.kind == k for c in curves) for k, _ in scales}
    learned_on = (f"{len(curves)} replay curves of {len({c.dataset for c in curves})} datasets ("
                  + ", ".join(f"{n} {k}" for k, n in kinds.items()) + f"; {len(needs)} scored points)")
    priors = dataclasses.replace(learned, kinds_learned_on=learned_on)
    save_priors(priors, path)
    ratios = ", ".join(f"{r:g}x" for r in priors.ratios)
    log(f"{note}: intervals per curve kind " + "; ".join(
        f"{k} x{', x'.join(f'{v:.2f}' for v in vals)}" for k, vals in scales) + f" at {ratios}; "
        "per starting point " + "; ".join(f"{k} from {n:g}: x{', x'.join(f'{v:.2f}' for v in vals)}"
                                           for k, n, vals in by_n0) + f", written to {path}")
    return priors
