"""What each query strategy saves: replays with simulated labelers (perfect and noisy:0.1), several
seeds, scored against random in the same run and against the head trained on every pool label.

    python -m loop benchmark-strategies --dataset demo --strategies random,margin,hybrid,auto \
        --repeats 3 --budget 300 --batch 10 --json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from loop.project import Paths, Project
from loop.replay import replay
from loop.store import Store

METRICS = ("acc_at_1pc", "acc_at_3pc", "acc_at_10pc", "aulc", "labels_to_90", "labels_to_95")
CURVE_METRIC = {"accuracy": "accuracy", "balanced": "balanced_accuracy"}


def dataset_label(dataset: str) -> str:
    """A dataset's name for output files and tables: its folder's name for a path (never the
    path itself), the name with ':' made '-' for a bundled set.

    >>> dataset_label("/data/sets/icons/"), dataset_label("fashion-mnist:200"), dataset_label("demo")
    ('icons', 'fashion-mnist-200', 'demo')
    """
    name = Path(dataset.rstrip("/\\")).name if ("/" in dataset or "\\" in dataset) else dataset
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name.replace(":", "-")) or "dataset"


def full_data_accuracy(project: Project) -> dict:
    """Hold-out accuracy and balanced accuracy of the head trained on every pool image with its
    folder label."""
    from models.heads import SoftmaxHead

    def data(split):
        images = project.store.images(project.id, split=split)
        return (project.embeddings_of(images),
                np.array([project.class_index[i["known_class_id"]] for i in images]))

    X, y = data("pool")
    X_holdout, y_holdout = data("holdout")
    head = SoftmaxHead(len(project.class_names)).fit(X, y)
    predicted = head.predict(X_holdout)
    recalls = [np.mean(predicted[y_holdout == c] == c) for c in np.unique(y_holdout)]
    return {"accuracy": float(np.mean(predicted == y_holdout)), "balanced_accuracy": float(np.mean(recalls))}


def smoothed(accuracy: np.ndarray) -> np.ndarray:
    """The curve made non-decreasing by isotonic regression (pool-adjacent-violators, SciPy's):
    a lucky retrain above later ones is averaged with them, so one spike does not make a
    crossing, and a rising end is not pulled down as a running mean would.

    >>> smoothed(np.array([0.5, 0.9, 0.5, 0.6])).round(3).tolist()
    [0.5, 0.667, 0.667, 0.667]
    """
    from scipy.optimize import isotonic_regression

    return isotonic_regression(np.asarray(accuracy, dtype=float)).x


def labels_to_reach(labels: np.ndarray, accuracy: np.ndarray, target: float) -> float | None:
    """The first labeled count from which the smoothed curve stays at or above `target` to the
    end of the run; None when it never does (the run is censored at its last count).

    >>> labels_to_reach(np.array([10, 20, 30, 40, 50]), np.array([0.5, 0.95, 0.5, 0.93, 0.96]), 0.9)
    40.0
    """
    above = smoothed(accuracy) >= target
    if not above[-1]:
        return None
    below = np.flatnonzero(~above)
    return float(labels[below[-1] + 1 if len(below) else 0])


def curve_metrics(labels: np.ndarray, accuracy: np.ndarray, n_classes: int, full: float) -> dict:
    """Accuracy at 1, 3 and 10 labels per class (interpolated), the area under the curve (mean
    accuracy over the label range), and the labels needed to reach 90% / 95% of `full` (see
    `labels_to_reach`; None: not reached by the end of the run)."""
    def at(n):
        return float(np.interp(n, labels, accuracy)) if labels[0] <= n <= labels[-1] else None

    span = labels[-1] - labels[0]
    aulc = float(np.trapezoid(accuracy, labels) / span) if span else float(accuracy[0])
    return {"acc_at_1pc": at(n_classes), "acc_at_3pc": at(3 * n_classes), "acc_at_10pc": at(10 * n_classes),
            "aulc": aulc, "labels_to_90": labels_to_reach(labels, accuracy, 0.90 * full),
            "labels_to_95": labels_to_reach(labels, accuracy, 0.95 * full)}


def censored_median(values: list[float | None]) -> float | None:
    """The median of labels-needed over runs, a run that never reached counting as more than any
    that did (censored at the budget); None when the median run did not reach.

    >>> censored_median([100, None, 200]), censored_median([100, None, None]), censored_median([50, 70])
    (200.0, None, 60.0)
    """
    ranked = sorted(np.inf if v is None else float(v) for v in values)
    median = float(np.median(ranked)) if ranked else np.inf
    return None if not np.isfinite(median) else median


def summarize(per_run: list[dict]) -> dict:
    """Per-metric figures over runs: accuracies and AULC as mean (and sd); labels-needed as the
    censored median with how many runs reached the target."""
    summary = {}
    for m in METRICS:
        values = [r[m] for r in per_run]
        if m.startswith("labels_to"):
            summary[m] = censored_median(values)
            summary[f"runs_reaching_{m.removeprefix('labels_to_')}"] = sum(v is not None for v in values)
        else:
            known = [v for v in values if v is not None]
            summary[m] = float(np.mean(known)) if known else None
            summary[f"{m}_sd"] = float(np.std(known, ddof=1)) if len(known) > 1 else None
    summary["runs"] = len(per_run)
    return summary


def ratio_text(mine: float | None, random: float | None, budget: int) -> str:
    """Labels needed against random as people should read it: a bound when a side did not reach
    within the budget ("< 0.80x": random did not reach by the budget, so the true ratio is lower).

    >>> ratio_text(120, 200, 300), ratio_text(240, None, 300), ratio_text(None, 150, 300), ratio_text(None, None, 300)
    ('0.60x', '< 0.80x', '> 2.00x', '-')
    """
    if mine is not None and random is not None:
        return f"{mine / random:.2f}x"
    if mine is not None:
        return f"< {mine / budget:.2f}x"
    if random is not None:
        return f"> {budget / random:.2f}x"
    return "-"


def paired_difference(mine: list[dict], random: list[dict], metric: str) -> tuple[float, float] | None:
    """Mean and standard error of (strategy - random) over the seeds both ran (a seed fixes the
    hold-out and the seed labels, so the runs pair)."""
    diffs = [a[metric] - b[metric] for a, b in zip(mine, random)
             if a[metric] is not None and b[metric] is not None]
    if not diffs:
        return None
    se = float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
    return float(np.mean(diffs)), se


def benchmark_strategies(dataset: str, strategies: list[str], repeats: int, budget: int, batch: int,
                         out: str | Path, data_dir: str | Path = "data",
                         labelers: tuple[str, ...] = ("perfect", "noisy:0.1"), log=print,
                         auto_accept: float | None = None, metric: str = "accuracy",
                         seed_picker: str = "random") -> dict:
    """{labeler: {strategy: figures over seeds (`summarize`) + "per_run" metrics, "curves":
    [(labels, score)], "queried_per_class"}}, plus "full_accuracy" (of `metric`: "accuracy" or
    "balanced"). With `auto_accept`, the default strategy runs once more with auto-accept at that
    precision (row "auto+accept"); its curves count human labels only, and each run's delivered
    precision (auto-accepted labels right / auto-accepted) is kept."""
    if metric not in CURVE_METRIC:
        raise ValueError(f"metric '{metric}' is not one of {', '.join(CURVE_METRIC)}")
    column = CURVE_METRIC[metric]
    if auto_accept:
        strategies = [*strategies, "auto+accept"]
    out = Path(out)
    results: dict = {"full_accuracy": None, "metric": metric, "budget": budget, "seeds": seed_picker}
    fulls: list[float] = []
    for labeler in labelers:
        results[labeler] = {}
        for name in strategies:
            runs, accept_stats = [], []
            for seed in range(repeats):
                folder = out / "runs" / labeler.replace(":", "-") / name / str(seed)
                accepting = name.endswith("+accept")
                rows = replay(dataset, folder, strategy=name.removesuffix("+accept"), labeler=labeler,
                              seed_per_class=1, batch=batch, budget=budget, seed=seed, data_dir=data_dir,
                              log=lambda *_: None, auto_accept=auto_accept if accepting else None,
                              seed_picker=seed_picker)
                project = Project(Store(folder / "replay" / "juicer.db"), "replay",
                                  Paths(folder / "replay", cache_dir=Paths(Path(data_dir)).cache))
                if len(fulls) < repeats:   # the same hold-out per seed whatever the strategy
                    fulls.append(full_data_accuracy(project)[column])
                # People's labels: what a label budget buys (auto-accepted ones cost nothing).
                labels = np.array([r["labels"] for r in rows], dtype=float)   # human labels (curve_rows)
                score = np.array([r[column] for r in rows])
                queried = [e["class_id"] for e in project.store.label_events(project.id)
                           if e["source"] == "simulated"]
                if accepting:
                    from loop.autoaccept import auto_accepted
                    truth = {i["id"]: i["known_class_id"] for i in project.store.images(project.id)}
                    auto = auto_accepted(project)
                    wrong = sum(e["class_id"] != truth[e["image_id"]] for e in auto)
                    accept_stats.append((len(auto), wrong))
                runs.append((labels, score, len(project.class_names), queried, project))
                log(f"{labeler:>10} {name:>16} seed {seed}: {score[0]:.3f} -> {score[-1]:.3f} "
                    f"at {int(labels[-1])} labels")
            per_run = [curve_metrics(labels, acc, k, fulls[s]) for s, (labels, acc, k, _, _) in enumerate(runs)]
            summary = summarize(per_run)
            summary["per_run"] = per_run
            summary["curves"] = [(labels.tolist(), acc.tolist()) for labels, acc, *_ in runs]
            project = runs[0][4]
            names = {c["id"]: c["name"] for c in project.class_rows}
            counts = np.zeros(len(names), int)
            for _, _, _, queried, _ in runs:
                for class_id in queried:
                    counts[list(names).index(class_id)] += 1
            summary["queried_per_class"] = dict(zip(names.values(), (counts / len(runs)).round(1).tolist()))
            if accept_stats:
                summary["auto_accepted"] = float(np.mean([a for a, _ in accept_stats]))
                summary["auto_wrong"] = float(np.mean([w for _, w in accept_stats]))
                summary["delivered_precision"] = [None if a == 0 else 1 - w / a for a, w in accept_stats]
                summary["promise"] = auto_accept
            results[labeler][name] = summary
    results["full_accuracy"] = float(np.mean(fulls))
    return results


def labelers_of(results: dict) -> list[str]:
    return [k for k in results if isinstance(results[k], dict)]


def verdicts(table: dict, name: str) -> list[str]:
    """Where strategy `name` is worse than random beyond its spread (paired over seeds: mean
    difference below -2 standard errors), at 1, 3 and 10 labels per class and in AULC."""
    worse = []
    for metric in ("acc_at_1pc", "acc_at_3pc", "acc_at_10pc", "aulc"):
        d = paired_difference(table[name]["per_run"], table["random"]["per_run"], metric)
        if d and np.isfinite(d[1]) and d[0] < -2 * max(d[1], 1e-9):
            worse.append(f"{metric} {100 * d[0]:+.1f} points (se {100 * d[1]:.1f})")
    return worse


def print_table(results: dict, dataset: str, budget: int) -> None:
    full, metric = results["full_accuracy"], results.get("metric", "accuracy")
    name_of = {"accuracy": "accuracy", "balanced": "balanced accuracy"}[metric]
    seeds = {"random": "seed images drawn at random, 1 per class",
             "cold-start": "seed images picked by the cold-start strategy"}[results.get("seeds", "random")]
    print(f"\n{dataset}: full-data {name_of} {full:.3f} (head on every pool label); "
          f"90% of it = {0.9 * full:.3f}, 95% = {0.95 * full:.3f}; budget {budget} labels; {seeds}")
    print("labels to X%: the first count from which the smoothed curve "
          "stays above X% of full data (isotonic fit of the run's retrains); median over runs, a run that never got there counted as "
          f"more than the budget ('>{budget}' when the median run did not); 'reached' = runs that got there")
    for labeler in labelers_of(results):
        table = results[labeler]
        random = table.get("random", {})
        print(f"\nlabeler {labeler} ({name_of})")
        print(f"{'strategy':>16} {'@1pc':>6} {'@3pc':>6} {'@10pc':>6} {'AULC':>6} "
              f"{'to 90%':>7} {'reached':>7} {'vs rnd':>8} {'to 95%':>7} {'reached':>7} {'vs rnd':>8}")
        for name, m in table.items():
            def fmt(v, spec):
                return "-" if v is None else format(v, spec)

            def need(key, m=m):
                return f">{budget}" if m[key] is None else f"{m[key]:.0f}"
            runs = m["runs"]
            print(f"{name:>16} {fmt(m['acc_at_1pc'], '.3f'):>6} {fmt(m['acc_at_3pc'], '.3f'):>6} "
                  f"{fmt(m['acc_at_10pc'], '.3f'):>6} {fmt(m['aulc'], '.3f'):>6} "
                  f"{need('labels_to_90'):>7} {str(m['runs_reaching_90']) + '/' + str(runs):>7} "
                  f"{ratio_text(m['labels_to_90'], random.get('labels_to_90'), budget):>8} "
                  f"{need('labels_to_95'):>7} {str(m['runs_reaching_95']) + '/' + str(runs):>7} "
                  f"{ratio_text(m['labels_to_95'], random.get('labels_to_95'), budget):>8}")
        if "random" in table:
            for name in table:
                if name != "random" and "per_run" in table[name]:
                    worse = verdicts(table, name)
                    print(f"{name}: " + ("worse than random beyond its spread at " + "; ".join(worse)
                                         if worse else "never worse than random beyond its spread "
                                         "(paired over seeds, at 1, 3, 10 labels per class and AULC)"))
        for name, m in table.items():
            if "auto_accepted" in m:
                base = table.get("auto", {})
                gain = (m["aulc"] - base["aulc"]) if base.get("aulc") is not None else None
                delivered = [p for p in m["delivered_precision"] if p is not None]
                held = sum(p >= m["promise"] for p in delivered)
                print(f"{name}: {m['auto_accepted']:.0f} labels auto-accepted per run, {m['auto_wrong']:.0f} of "
                      f"them wrong; delivered precision per run "
                      f"{', '.join(f'{p:.3f}' for p in delivered) or 'none accepted'}: the promise "
                      f"{m['promise']} held in {held} of {len(delivered)} runs that accepted anything "
                      f"({len(m['delivered_precision']) - len(delivered)} accepted nothing); area under "
                      f"the curve per human label {'-' if gain is None else f'{gain:+.3f}'} against auto alone")
        print("queried images per class (mean per run): " + "; ".join(
            f"{name}: {min(m['queried_per_class'].values()):.0f}-{max(m['queried_per_class'].values()):.0f}"
            for name, m in table.items()))


def plot(results: dict, dataset: str, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labelers = labelers_of(results)
    fig, axes = plt.subplots(1, len(labelers), figsize=(6 * len(labelers), 4.2), squeeze=False)
    for ax, labeler in zip(axes[0], labelers):
        for name, m in results[labeler].items():
            grid = np.array(m["curves"][0][0])
            curves = np.array([np.interp(grid, labels, acc) for labels, acc in m["curves"]])
            mean, std = curves.mean(0), curves.std(0)
            ax.plot(grid, mean, label=name)
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
        ax.axhline(0.95 * results["full_accuracy"], color="grey", ls=":", label="95% of full data")
        ax.set(title=f"{dataset}, labeler {labeler}", xlabel="labels from people",
               ylabel=f"hold-out {'balanced accuracy' if results.get('metric') == 'balanced' else 'accuracy'}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


JSON_KEYS = (*METRICS, "runs_reaching_90", "runs_reaching_95", "runs")


def write_json(results: dict, dataset: str, path: Path, command: str | None = None) -> None:
    """Merge this dataset's figures into `path`: {dataset: {strategy: figures}} for the perfect
    labeler ("default" = the auto strategy), the other labelers under "<dataset>/<labeler>", and
    the command that made them under "_commands"."""
    existing = json.loads(path.read_text()) if path.exists() else {}
    label = dataset_label(dataset) + ("" if results.get("metric", "accuracy") == "accuracy"
                                      else f"/{results['metric']}") + (
        "" if results.get("seeds", "random") == "random" else f"/seeds-{results['seeds']}")
    for labeler in labelers_of(results):
        table = results[labeler]
        entry = {name: {m: table[name][m] for m in JSON_KEYS} for name in table}
        for name in entry:
            if "delivered_precision" in table[name]:
                entry[name]["delivered_precision"] = table[name]["delivered_precision"]
        if "auto" in entry:
            entry["default"] = entry["auto"]
        existing[label if labeler == "perfect" else f"{label}/{labeler}"] = entry
    if command:
        existing.setdefault("_commands", {})[label] = command
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=1, sort_keys=True) + "\n")
