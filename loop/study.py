"""The subsampling study: train the head on random subsets of the labeled pool (several repeats per
size, cheap on cached embeddings), fit the learning-curve forecaster to those runs, then train on the
whole pool and check the forecast against what was measured, as a lead would before buying labels.

    python -m loop study --dataset demo --fractions 0.05,0.1,0.25,0.5 --repeats 5 --target 0.95 \
        --out runs/study --json

From Python (the app's curve page does this on the project's current labels):

    result = run_study(Project.open("birds"), fractions=None, repeats=5, target=0.9)
    print(report(result)); study_figure(result).savefig("study.png")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loop.forecast import LabelsNeeded, LearningCurveForecaster
from loop.project import Paths, Project, ProjectError, open_or_create_dataset_project

DEFAULT_FRACTIONS = (0.05, 0.1, 0.25, 0.5)
POOL_SOURCES = ("labels", "known", "auto")
RUN_COLUMNS = ["kind", "size", "fraction", "repeat", "seed", "accuracy", "seconds"]


# -- the plan: which subset sizes, which images --------------------------------------------------

def parse_fractions(text: str) -> list[float] | None:
    """'0.05,0.1,0.25' -> [0.05, 0.1, 0.25]; 'auto' -> None (sizes chosen by `study_sizes`).

    >>> parse_fractions("0.05, 0.1,0.25")
    [0.05, 0.1, 0.25]
    >>> parse_fractions("0.5,1")
    Traceback (most recent call last):
    ...
    ValueError: fraction 1 must lie strictly between 0 and 1 (a share of the labeled pool)
    """
    if text.strip().lower() == "auto":
        return None
    values = []
    for part in (p.strip() for p in text.split(",")):
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(f"fraction '{part}' is not a number; give shares of the labeled pool "
                             "such as 0.05,0.1,0.25,0.5 (or 'auto')") from None
    return check_fractions(values)


def check_fractions(fractions: Sequence[float]) -> list[float]:
    """The fractions as floats, each strictly between 0 and 1; at least one."""
    if not len(fractions):
        raise ValueError("give at least one fraction, e.g. 0.05,0.1,0.25,0.5")
    out = []
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float, np.number)):
            raise ValueError(f"fraction {f!r} is not a number")
        if not 0 < f < 1:
            raise ValueError(f"fraction {f:g} must lie strictly between 0 and 1 (a share of the "
                             "labeled pool)")
        out.append(float(f))
    return out


def study_sizes(pool_size: int, n_classes: int, fractions: Sequence[float] | None = None) -> list[int]:
    """Distinct subset sizes: `fractions` of the pool, each raised to at least one label per class
    and kept below the pool size; or, with no fractions, four sizes spaced evenly in log from one
    label per class to half the pool. A forecast needs at least 3.

    >>> study_sizes(1600, 10, [0.05, 0.1, 0.25, 0.5])
    [80, 160, 400, 800]
    >>> study_sizes(40, 10)
    [10, 13, 16, 20]
    >>> study_sizes(40, 10, [0.05, 0.1, 0.5])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a study needs 3 or more distinct subset sizes ... fractions 0.05, 0.1, 0.5 give 10, 20...
    """
    if fractions is None:
        top = pool_size // 2
        if top < n_classes + 2:
            raise ValueError(f"a study needs at least {2 * (n_classes + 2)} labeled pool images for "
                             f"{n_classes} classes (3 subset sizes from one label per class to half "
                             f"the pool); there are {pool_size}. Label more images first")
        sizes = sorted({round(s) for s in np.geomspace(n_classes, top, 4)})
    else:
        fractions = check_fractions(fractions)
        sizes = sorted({max(n_classes, round(f * pool_size)) for f in fractions})
        sizes = [s for s in sizes if s < pool_size]
        if len(sizes) < 3:
            raise ValueError(
                f"a study needs 3 or more distinct subset sizes of at least {n_classes} labels (one "
                f"per class) and below the pool's {pool_size}; fractions "
                f"{', '.join(f'{f:g}' for f in fractions)} give {', '.join(map(str, sizes)) or 'none'}. "
                "Use larger fractions, 'auto' sizes, or label more images")
    return sizes


def draw_subset(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a random subset of `size` items of `y` holding every class at least once (when
    `size` allows); the rest drawn uniformly, so class shares follow the pool's on average.

    >>> y = np.array([0] * 90 + [1] * 9 + [2]); rng = np.random.default_rng(0)
    >>> picked = draw_subset(y, 5, rng)
    >>> len(set(picked.tolist())), sorted(set(y[picked].tolist()))
    (5, [0, 1, 2])
    """
    if not 0 < size <= len(y):
        raise ValueError(f"subset size {size} must lie between 1 and the pool's {len(y)}")
    classes = np.unique(y)
    if size < len(classes):
        return np.sort(rng.choice(len(y), size=size, replace=False))
    firsts = np.array([rng.choice(np.flatnonzero(y == c)) for c in classes], dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(y)), firsts)
    more = rng.choice(rest, size=size - len(firsts), replace=False)
    return np.sort(np.r_[firsts, more])


# -- the data: labeled pool and hold-out --------------------------------------------------------

def pool_source(project: Project) -> str:
    """'known' when every pool image has a class from its folder (a labeled dataset: the study
    can use them all, as a replay does), else 'labels' (the labels people gave)."""
    pool = project.store.images(project.id, split="pool")
    return "known" if pool and all(i["known_class_id"] is not None for i in pool) else "labels"


def labeled_pool(project: Project, source: str = "labels", backbone: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image ids, embeddings, class indices) of the pool images the study may train on: with
    'labels' the current labels less auto-accepted ones (a study counts labels people gave), with
    'known' every pool image's folder class (the ground truth a replay answers from). Embeddings
    of `backbone` (default the project's)."""
    if source == "auto":
        source = pool_source(project)
    if source == "labels":
        ids, X, y = project.labeled("pool", backbone=backbone)
        auto = set(project.store.current_labels(project.id, "pool", source="auto"))
        keep = np.array([i not in auto for i in ids], dtype=bool)
        return ids[keep], X[keep], y[keep]
    if source == "known":
        images = [i for i in project.store.images(project.id, split="pool")
                  if i["known_class_id"] is not None]
        if not images:
            raise ProjectError(f"project '{project.name}' has no pool images with a folder class; "
                               "use the labels people gave (pool='labels')")
        return (np.array([i["id"] for i in images], dtype=np.int64),
                project.embeddings_of(images, backbone),
                np.array([project.class_index[i["known_class_id"]] for i in images], dtype=np.int64))
    raise ValueError(f"pool source '{source}' is not one of {', '.join(POOL_SOURCES)}")


# -- the study ------------------------------------------------------------------------------------

@dataclass
class StudyResult:
    """A finished study. `runs` has one row per trained head (RUN_COLUMNS; kind 'subset' or
    'full'), `correct` its per-image hold-out results (runs x hold-out images, 1 right, 0 wrong);
    the forecaster is fitted on the subset runs only, so the full-pool runs check it."""

    project: str
    pool: str                    # 'labels' or 'known': where the training labels came from
    n_classes: int
    pool_size: int
    holdout_size: int
    target: float
    runs: pd.DataFrame
    correct: np.ndarray
    forecaster: LearningCurveForecaster
    predicted_full: tuple[float, float, float]    # mean, 10th and 90th percentile
    labels_needed: LabelsNeeded
    seconds: float
    project_pool: int | None = None    # the project's pool images: the most people could label
    backbone: str | None = None        # whose embeddings the heads trained on

    def needed_text(self) -> str:
        """"Labels needed" within what the project allows: a count (or a bound) beyond the
        project's pool is said as what labeling all of it would reach, never as a number of labels
        the project cannot give."""
        needed, limit = self.labels_needed, self.project_pool
        if limit is None or (needed.reachable and needed.labels <= limit and
                             needed.high is not None and needed.high <= limit):
            return str(needed)
        mean, low, high = self.forecaster.predict(limit)
        at_limit = (f"labeling all {limit:,} pool images is forecast to reach about {mean:.1%} "
                    f"(80%: {low:.1%} to {high:.1%})")
        if needed.reachable and needed.labels <= limit:
            return (f"about {needed.labels:,.0f} labels to reach {self.target:.1%} (80% interval "
                    f"{needed.low or 0:,.0f} to more than the {limit:,} pool images); {at_limit}")
        return (f"{at_limit}; {self.target:.1%} would need more images than the project has"
                + ("" if needed.reachable else f" (the forecast levels off at {needed.ceiling:.1%})"))

    @property
    def measured_full_runs(self) -> list[float]:
        return self.runs.loc[self.runs["kind"] == "full", "accuracy"].tolist()

    @property
    def measured_full(self) -> float:
        return float(np.mean(self.measured_full_runs))

    @property
    def inside_interval(self) -> bool:
        _, low, high = self.predicted_full
        return bool(low <= self.measured_full <= high)

    def summary(self) -> pd.DataFrame:
        """Per size (subsets, then the full pool): n, runs, mean, sd, min, max of accuracy."""
        grouped = self.runs.groupby(["kind", "size"], sort=False)["accuracy"]
        table = grouped.agg(runs="count", mean="mean", sd="std", min="min", max="max").reset_index()
        return table.rename(columns={"size": "n"})[["kind", "n", "runs", "mean", "sd", "min", "max"]]

    def figures(self) -> dict:
        """The study's figures as plain JSON-ready values."""
        mean, low, high = self.predicted_full
        labels, labels_low, labels_high = self.labels_needed
        plain = lambda v: None if v is None or not np.isfinite(v) else float(v)  # noqa: E731
        sizes = [{"n": int(r.n), "runs": int(r.runs), "mean": plain(r.mean), "sd": plain(r.sd),
                  "min": plain(r.min), "max": plain(r.max)}
                 for r in self.summary().query("kind == 'subset'").itertuples()]
        return {"project": self.project, "backbone": self.backbone, "pool": self.pool,
                "pool_size": self.pool_size,
                "holdout_size": self.holdout_size, "n_classes": self.n_classes, "sizes": sizes,
                "predicted_full": {"n": self.pool_size, "mean": mean, "low": low, "high": high},
                "measured_full": self.measured_full, "measured_full_runs": self.measured_full_runs,
                "inside_interval": self.inside_interval,
                "labels_needed": {"target": self.target, "labels": plain(labels),
                                  "low": plain(labels_low), "high": plain(labels_high),
                                  "reachable": self.labels_needed.reachable,
                                  "text": self.needed_text()},
                "seconds": round(self.seconds, 2)}


def run_study(project: Project, fractions: Sequence[float] | None = DEFAULT_FRACTIONS,
              repeats: int = 5, target: float = 0.9, seed: int = 0,
              on_progress: Callable[[int, int], None] | None = None, *, repeats_full: int = 3,
              pool: str = "labels", backbone: str | None = None) -> StudyResult:
    """Train `repeats` heads per subset size (`fractions` of the labeled pool, or sizes chosen by
    `study_sizes` when None), score each on the labeled hold-out images, fit the forecaster, then
    train `repeats_full` heads on the whole pool to check its prediction there. `pool` picks the
    training labels (see `labeled_pool`); `backbone` the embeddings (a registered backbone or
    feature option already cached for the project; default the project's); `on_progress(done,
    total)` is called after each head. Seeds follow from `seed`, so the same call gives the same
    subsets (whatever the backbone: a comparison is paired)."""
    if repeats < 1 or repeats_full < 1:
        raise ValueError(f"repeats and repeats_full must be at least 1, got {repeats} and {repeats_full}")
    if not 0 < target <= 1:
        raise ValueError(f"target accuracy must lie in (0, 1], got {target}")
    started = time.perf_counter()
    source = pool_source(project) if pool == "auto" else pool
    ids, X, y = labeled_pool(project, source, backbone)
    _, X_holdout, y_holdout = project.labeled("holdout", backbone=backbone)
    if not len(y_holdout):
        raise ProjectError(f"project '{project.name}' has no labeled hold-out images to score on; "
                           "label some first (the queue mixes them in)")
    present = len(np.unique(y))
    if present < 2:
        raise ProjectError(f"project '{project.name}' has {len(y)} labeled pool image(s) in {present} "
                           "class(es); a study needs labels in at least 2 classes")
    sizes = study_sizes(len(y), present, fractions)

    plan = [("subset", size, r, np.random.default_rng([seed, 5, size, r]))
            for size in sizes for r in range(repeats)]
    plan += [("full", len(y), r, np.random.default_rng([seed, 6, r])) for r in range(repeats_full)]
    rows, correct = [], []
    for done, (kind, size, repeat, rng) in enumerate(plan, 1):
        picked = draw_subset(y, size, rng) if kind == "subset" else np.arange(len(y))
        # Subsets differ by their images; the head keeps the project's seed (as a retrain does),
        # since each new seed compiles its own training loop (~0.5 s). Full-pool repeats share
        # their images, so there the seed (batch order, initial weights) is what varies.
        head_seed = project.settings.seed + (repeat if kind == "full" else 0)
        tick = time.perf_counter()
        head = project.new_head(head_seed)
        # As a retrain does: with few labels the head also learns from the rest of the pool
        # (the images of the pool not in this subset, unlabeled; never the hold-out).
        unlabeled = (project.unlabeled_pool(ids[picked], head.spread_max_unlabeled, seed=size,
                                            backbone=backbone)
                     if head.wants_unlabeled(y[picked]) else None)
        head.fit(X[picked], y[picked], unlabeled=unlabeled)
        right = head.predict(X_holdout) == y_holdout
        rows.append({"kind": kind, "size": size, "fraction": size / len(y), "repeat": repeat,
                     "seed": head_seed, "accuracy": float(right.mean()),
                     "seconds": time.perf_counter() - tick})
        correct.append(right.astype(np.float32))
        if on_progress:
            on_progress(done, len(plan))
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    correct = np.array(correct)

    subset = (runs["kind"] == "subset").to_numpy()
    forecaster = LearningCurveForecaster(len(project.class_names), len(y_holdout), seed=seed).fit(
        runs.loc[subset, "size"].to_numpy(), runs.loc[subset, "accuracy"].to_numpy(),
        correct=correct[subset])
    return StudyResult(project=project.name, pool=source, n_classes=len(project.class_names),
                       pool_size=len(y), holdout_size=len(y_holdout), target=float(target),
                       runs=runs, correct=correct, forecaster=forecaster,
                       predicted_full=tuple(float(v) for v in forecaster.predict(len(y))),
                       labels_needed=forecaster.labels_needed(target),
                       seconds=time.perf_counter() - started,
                       project_pool=len(project.store.images(project.id, split="pool")),
                       backbone=backbone or project.settings.backbone)


# -- which backbone or feature option gives the most per label ------------------------------------

def compare_backbones(project: Project, target: float = 0.9, backbones: Sequence[str] | None = None,
                      fractions: Sequence[float] | None = None, repeats: int = 5, seed: int = 0,
                      pool: str = "labels", repeats_full: int = 3,
                      on_progress: Callable[[int, int], None] | None = None) -> list[StudyResult]:
    """The study once per backbone or feature option (default: each one the project's images are
    all embedded with, see Project.embedded_backbones), on the same labels, subsets and hold-out,
    ranked best first (see `rank_key`)."""
    names = list(backbones) if backbones else project.embedded_backbones()
    if not names:
        raise ProjectError(f"project '{project.name}' has no backbone with every image embedded yet")
    results = []
    for k, name in enumerate(names):
        def progress(done, total, k=k):
            if on_progress:
                on_progress(k * total + done, len(names) * total)
        results.append(run_study(project, fractions, repeats, target, seed, progress,
                                 repeats_full=repeats_full, pool=pool, backbone=name))
    return sorted(results, key=rank_key)


def rank_key(result: StudyResult) -> tuple:
    """Best first: one forecast to reach the target before one that is not, then fewer labels
    needed, then the higher measured accuracy with the whole pool."""
    needed = result.labels_needed
    reaches = needed.reachable and needed.labels is not None and np.isfinite(needed.labels)
    return (not reaches, needed.labels if reaches else 0.0, -result.measured_full)


def comparison_report(results: Sequence[StudyResult]) -> str:
    """The comparison as text: per option the measured accuracy with the whole pool, the forecast
    there, and the labels needed for the target; then which one to use."""
    if not results:
        return "no backbone to compare"
    first = results[0]
    lines = [(f"backbones and feature options on '{first.project}': {first.pool_size:,} labeled pool "
              f"images, {first.holdout_size:,} hold-out images, the same subsets for each; target "
              f"{first.target:.1%}"),
             f"{'backbone':<28} {'measured (all)':>15} {'forecast (all)':>22}  labels needed for the target"]
    for r in results:
        mean, low, high = r.predicted_full
        lines.append(f"{r.backbone:<28} {r.measured_full:>15.3f} {mean:>8.3f} ({low:.3f}-{high:.3f})"
                     f"  {r.needed_text()}")
    best = results[0]
    if len(results) > 1:
        lines.append(f"most per label: {best.backbone} ({best.needed_text()})")
    return "\n".join(lines)


# -- opening, reporting, writing ----------------------------------------------------------------

def open_study_project(name: str, data_dir: str | Path = "data",
                       on_progress: Callable[[int, int], None] | None = None) -> Project:
    """A project of the data folder by name, else the project of a bundled dataset (created with
    cached embeddings on first use), else a ProjectError naming both kinds."""
    from loop.datasets import DATASETS
    from loop.store import Store

    paths = Paths(Path(data_dir))
    names = ([p["name"] for p in Store(paths.database).projects()]
             if isinstance(paths.database, str) or paths.database.exists() else [])
    if name in names:
        return Project(Store(paths.database), name, paths)
    if name.partition(":")[0] in DATASETS:
        return open_or_create_dataset_project(name, paths, on_progress=on_progress)
    raise ProjectError(f"'{name}' is neither a project in '{data_dir}' (projects: "
                       f"{', '.join(names) or 'none yet'}) nor a bundled dataset "
                       f"({', '.join(DATASETS)}, or NAME:K for K images per class)")


def report(result: StudyResult) -> str:
    """The study as text: the table per size, the forecast, and the check against the full pool."""
    source = "current labels" if result.pool == "labels" else "classes from their folders"
    lines = [(f"study of '{result.project}': {result.pool_size} labeled pool images ({source}), "
              f"{result.holdout_size} hold-out images, {result.n_classes} classes"),
             f"{'n':>7} {'runs':>5} {'mean acc':>9} {'sd':>6} {'min':>6} {'max':>6}"]
    for r in result.summary().itertuples():
        sd = "-" if np.isnan(r.sd) else f"{r.sd:.3f}"
        lines.append(f"{r.n:>7} {r.runs:>5} {r.mean:>9.3f} {sd:>6} {r.min:>6.3f} {r.max:>6.3f}"
                     + ("  (full pool: the check)" if r.kind == "full" else ""))
    mean, low, high = result.predicted_full
    runs = len(result.measured_full_runs)
    lines += [(f"forecast at the full pool ({result.pool_size:,} labels), fitted on the subsets: "
               f"{mean:.3f} (80% interval {low:.3f} to {high:.3f})"),
              (f"measured at the full pool: {result.measured_full:.3f} (mean of {runs} run"
               f"{'s' if runs > 1 else ''}): {'inside' if result.inside_interval else 'OUTSIDE'} "
               f"the 80% interval, {result.measured_full - mean:+.3f} from the forecast"),
              f"labels needed: {result.needed_text()}",
              f"({len(result.runs)} heads trained in {result.seconds:.1f} s)"]
    return "\n".join(lines)


def study_figure(result: StudyResult):
    """A matplotlib Figure: every run, mean and spread per size, the forecast with its 80% band,
    the measured full-pool accuracy and the target line (no pyplot: safe in the app's threads)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    summary = result.summary()
    subsets, full = summary[summary["kind"] == "subset"], summary[summary["kind"] == "full"]
    runs = result.runs[result.runs["kind"] == "subset"]
    ax.plot(runs["size"], runs["accuracy"], ".", color="0.6", ms=4, label="one run")
    ax.errorbar(subsets["n"], subsets["mean"], yerr=subsets["sd"].fillna(0), fmt="o", color="C0",
                capsize=4, label="mean ± sd per size")
    needed = result.labels_needed.labels
    right = max(2 * result.pool_size, min(needed or 0, 20 * result.pool_size))
    grid = np.geomspace(subsets["n"].min() / 1.5, right, 200)
    mean, low, high = result.forecaster.predict(grid)
    ax.plot(grid, mean, "-", color="C1", label="forecast")
    ax.fill_between(grid, low, high, color="C1", alpha=0.2,
                    label="80% interval: 8 measurements in 10 should fall inside")
    verdict = "inside" if result.inside_interval else "outside"
    ax.errorbar(full["n"], full["mean"], yerr=full["sd"].fillna(0), fmt="*", ms=12, color="C3",
                capsize=4, label=f"measured, full pool ({verdict} the interval)")
    ax.axhline(result.target, ls="--", color="0.3", lw=1, label=f"target {result.target:.0%}")
    if result.forecaster.priors.labels_shift > 0:
        ax.plot(grid, result.forecaster.labels_curve(grid), "--", color="C2", lw=1,
                label="forecast used for \"labels needed\" (best at timing a target on real curves)")
    if needed is not None and needed <= right:
        ax.axvline(needed, ls=":", color="C2", lw=1,
                   label=f"about {needed:,.0f} labels for {result.target:.0%}")
    trained_on = ("labels people gave (random subsets of them)" if result.pool == "labels"
                  else "labeled training images (random subsets of the pool)")
    ax.set(xscale="log", xlabel=trained_on, ylabel="hold-out accuracy",
           ylim=(max(0.0, min(runs["accuracy"].min(), low.min()) - 0.05), 1.0),
           title=f"{result.project}: subsampling study ({result.holdout_size} hold-out images)")
    from loop.curve import plain_log_axis

    plain_log_axis(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def write_outputs(result: StudyResult, out: str | Path) -> tuple[Path, Path]:
    """`out`/study.csv (one row per run) and `out`/study.png (study_figure)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "study.csv", out / "study.png"
    result.runs.to_csv(csv_path, index=False, float_format="%.6f")
    study_figure(result).savefig(png_path, dpi=100)
    return csv_path, png_path
