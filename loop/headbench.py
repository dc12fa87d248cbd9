"""Which head gets the most out of few labels: accuracy and balanced accuracy at 1, 3 and 10
labels per class and with every pool label, for today's softmax head ("baseline") and each new
option, in the same run, on the same hold-out and the same random label draws; plus retrain
p50/p95 at 5,000 labels.

    python -m loop benchmark-heads --datasets demo,fashion-mnist,mnist5k --repeats 5 --json

Each dataset is a project (its hold-out drawn as the product draws it, never trained on and never
given to a head as unlabeled data); repeat r draws k labels per class at random from the pool
(seed r), and a head that learns from the pool gets the rest of the pool's embeddings, unlabeled.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from loop.project import Paths, Project, open_or_create_dataset_project
from loop.settings import HeadSettings, Settings

PER_CLASS = (1, 3, 10)
SPREAD = {"spread_neighbors": 15, "spread_alpha": 0.5, "spread_until": 20.0, "spread_power": 4.0}
# Head options, each a change to the default head settings. "baseline" is the head before
# issue 12 (no spreading, no prototypes); "default" is HeadSettings() as a project gets it.
HEADS: dict[str, dict] = {
    "baseline": {"spread_neighbors": 0, "prototype_weight": 0.0},
    "prototype": {"spread_neighbors": 0, "prototype_weight": 1.0},
    "spread (weight = confidence)": {**SPREAD, "spread_power": 1.0, "prototype_weight": 0.0},
    "spread": {**SPREAD, "prototype_weight": 0.0},
    "spread+prototype": {**SPREAD, "prototype_weight": 1.0},
    "default": {},
}
METRICS = ("acc_at_1pc", "acc_at_3pc", "acc_at_10pc", "acc_all")


def head_settings(name: str) -> dict:
    """The SoftmaxHead keyword arguments of head option `name` (a key of HEADS)."""
    if name not in HEADS:
        raise ValueError(f"unknown head '{name}'; known: {', '.join(HEADS)}")
    return dataclasses.asdict(dataclasses.replace(HeadSettings(), **HEADS[name]))


def draw_per_class(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of k labels per class drawn at random (all of a class with fewer than k).

    >>> draw_per_class(np.array([0, 0, 0, 1, 1]), 2, np.random.default_rng(0)).shape
    (4,)
    """
    return np.sort(np.concatenate([
        rng.choice(rows, min(k, len(rows)), replace=False)
        for rows in (np.flatnonzero(y == c) for c in np.unique(y))]))


def scores(y_true: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(accuracy, balanced accuracy = mean recall over the classes present)."""
    recalls = [np.mean(predicted[y_true == c] == c) for c in np.unique(y_true)]
    return float(np.mean(predicted == y_true)), float(np.mean(recalls))


def project_data(project: Project, backbone: str | None = None) -> dict:
    """Pool and hold-out embeddings (under `backbone`, default the project's) and folder classes."""
    if backbone:
        project.embed(backbone=backbone)
    out = {}
    for split in ("pool", "holdout"):
        images = project.store.images(project.id, split=split)
        out[split] = (project.embeddings_of(images, backbone),
                      np.array([project.class_index[i["known_class_id"]] for i in images]))
    return out


def evaluate_heads(data: dict, n_classes: int, heads: list[str], repeats: int,
                   per_class=PER_CLASS) -> dict:
    """{head: {metric: [per repeat]}} with metrics acc_at_Kpc, bal_at_Kpc, acc_all, bal_all."""
    from models.heads import SoftmaxHead

    X_pool, y_pool = data["pool"]
    X_hold, y_hold = data["holdout"]
    results = {h: {} for h in heads}
    for k in (*per_class, None):
        key = "all" if k is None else f"at_{k}pc"
        for r in range(repeats if k is not None else 1):
            rows = (np.arange(len(y_pool)) if k is None
                    else draw_per_class(y_pool, k, np.random.default_rng([r, k])))
            rest = np.setdiff1d(np.arange(len(y_pool)), rows)
            for name in heads:
                head = SoftmaxHead(n_classes, seed=r, **head_settings(name))
                head.fit(X_pool[rows], y_pool[rows], unlabeled=X_pool[rest])
                acc, bal = scores(y_hold, head.predict(X_hold))
                results[name].setdefault(f"acc_{key}", []).append(acc)
                results[name].setdefault(f"bal_{key}", []).append(bal)
    return results


def retrain_times(X: np.ndarray, y: np.ndarray, unlabeled: np.ndarray, n_classes: int,
                  settings: dict, repeats: int) -> tuple[float, float]:
    """p50 and p95 seconds of a warm-started retrain on (X, y) with `unlabeled`, as the trainer
    runs it (after one cold fit)."""
    from models.heads import SoftmaxHead

    previous = SoftmaxHead(n_classes, **settings).fit(X, y, unlabeled=unlabeled)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        previous = SoftmaxHead(n_classes, **settings).fit(X, y, warm_start=previous,
                                                          unlabeled=unlabeled)
        times.append(time.perf_counter() - started)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def benchmark_heads(datasets: list[str], repeats: int = 5, heads: list[str] | None = None,
                    features: list[str] | None = None, data_dir: str | Path = "data",
                    work: str | Path | None = None, timing_dataset: str = "fashion-mnist:800",
                    timing_repeats: int = 20, log=print) -> dict:
    """{dataset: {head: {metric: mean}}} (plus "_spread" per head: the per-repeat lists, and
    "_retrain": p50/p95 at 5,000 labels and at 10 per class per head). `features`: other
    registered feature options (backbone names) to try with the default head, as
    "default on <option>" rows."""
    heads = heads or list(HEADS)
    data_dir = Path(data_dir)
    work = Path(work) if work else data_dir / "bench" / "heads"
    results: dict = {}
    for dataset in datasets:
        paths = Paths(work / dataset.replace(":", "-"), cache_dir=Paths(data_dir).cache)
        project = open_or_create_dataset_project(dataset, paths, name="heads", data_dir=data_dir,
                                                 settings=Settings(holdout_size=500))
        k = len(project.class_names)
        started = time.perf_counter()
        table = evaluate_heads(project_data(project), k, heads, repeats)
        for option in features or []:
            table[f"default on {option}"] = evaluate_heads(project_data(project, option), k,
                                                           ["default"], repeats)["default"]
        results[dataset] = {name: {m: float(np.mean(v)) for m, v in runs.items()}
                            for name, runs in table.items()}
        results[dataset]["_runs"] = table
        results[dataset]["_sizes"] = {"pool": len(project.store.images(project.id, split="pool")),
                                      "holdout": len(project.store.images(project.id, split="holdout")),
                                      "classes": k}
        log(f"{dataset}: {time.perf_counter() - started:.0f} s")
    results["_retrain"] = retrain_figures(timing_dataset, heads, data_dir, work, timing_repeats)
    return results


def retrain_figures(dataset: str, heads: list[str], data_dir: Path, work: Path, repeats: int) -> dict:
    """Retrain p50/p95 per head at 5,000 labels (the rest of the pool unlabeled) and at 10 labels
    per class (5,000 - 100 unlabeled, as many as a head takes), on `dataset`'s real embeddings."""
    paths = Paths(work / dataset.replace(":", "-"), cache_dir=Paths(data_dir).cache)
    project = open_or_create_dataset_project(dataset, paths, name="heads", data_dir=data_dir,
                                             settings=Settings(holdout_size=500))
    X, y = project_data(project)["pool"]
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order], y[order]
    k = len(project.class_names)
    if len(y) < 5000:
        raise ValueError(f"{dataset} has a pool of {len(y)} images; the retrain figures need 5,000")
    few = draw_per_class(y[:5000], 10, np.random.default_rng(0))
    rest = np.setdiff1d(np.arange(5000), few)
    out = {"dataset": dataset}
    for name in heads:
        settings = head_settings(name)
        out[name] = {"at_5000": retrain_times(X[:5000], y[:5000], X[5000:], k, settings, repeats),
                     "at_10pc": retrain_times(X[few], y[few], X[rest], k, settings, repeats)}
    return out


def print_report(results: dict, log=print) -> None:
    datasets = [d for d in results if not d.startswith("_")]
    width = max([30] + [len(h) + 1 for d in datasets for h in results[d] if not h.startswith("_")])
    for dataset in datasets:
        table = results[dataset]
        sizes = table["_sizes"]
        log(f"\n{dataset}: {sizes['classes']} classes, pool {sizes['pool']:,}, hold-out "
            f"{sizes['holdout']:,}; mean over draws (+- s.e. of the paired difference to baseline)")
        heads = [h for h in table if not h.startswith("_")]
        log(f"{'head':<{width}}" + "".join(f"{m:>17}" for m in ("acc@1pc", "acc@3pc", "acc@10pc", "acc all",
                                                          "bal@1pc", "bal@3pc", "bal@10pc", "bal all")))
        base = table["_runs"].get("baseline")
        for head in heads:
            cells = []
            for metric in ("acc_at_1pc", "acc_at_3pc", "acc_at_10pc", "acc_all",
                           "bal_at_1pc", "bal_at_3pc", "bal_at_10pc", "bal_all"):
                runs = np.array(table["_runs"][head][metric])
                text = f"{runs.mean():.3f}"
                if base is not None and head != "baseline":
                    diff = runs - np.array(base[metric])
                    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
                    text += f" {100 * diff.mean():+.1f}" + (f"+-{100 * se:.1f}" if len(diff) > 1 else "")
                cells.append(f"{text:>17}")
            log(f"{head:<{width}}" + "".join(cells))
    heads = [h for h in results[datasets[0]] if not h.startswith("_")] if datasets else []
    if "baseline" in heads:
        log("\nmean over the sets, points against baseline (target for the default: +4 at 1 and 3 "
            "per class, never below -0.5 at 10 per class or with all labels)")
        for head in heads:
            if head == "baseline":
                continue
            gains = {m: 100 * np.mean([results[d][head][m] - results[d]["baseline"][m] for d in datasets])
                     for m in METRICS}
            log(f"{head:<{width}}" + "".join(f"{m.removeprefix('acc_')}: {g:+.1f}   " for m, g in gains.items()))
    timing = results.get("_retrain")
    if timing:
        log(f"\nretrain seconds on {timing['dataset']} embeddings, p50 / p95 (warm-started, as the "
            "trainer runs it; target p95 <= 0.25 s at 5,000 labels)")
        for head in heads:
            if head in timing:
                (a50, a95), (b50, b95) = timing[head]["at_5000"], timing[head]["at_10pc"]
                log(f"{head:<{width}} at 5,000 labels {a50:.3f} / {a95:.3f}    at 10 per class "
                    f"(with the unlabeled pool) {b50:.3f} / {b95:.3f}")


def json_line(results: dict) -> str:
    """{dataset: {head: {"acc_at_1pc", "acc_at_3pc", "acc_at_10pc", "acc_all", and the balanced
    ones}}, "_retrain": {...}}"""
    out = {d: {h: {m: round(v, 4) for m, v in figures.items()}
               for h, figures in table.items() if not h.startswith("_")}
           for d, table in results.items() if not d.startswith("_")}
    if "_retrain" in results:
        out["_retrain"] = results["_retrain"]
    return json.dumps(out)
