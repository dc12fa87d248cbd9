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
from loop.store import Store
from loop.replay import replay

METRICS = ("acc_at_1pc", "acc_at_3pc", "acc_at_10pc", "aulc", "labels_to_90", "labels_to_95")


def full_data_accuracy(project: Project) -> float:
    """Hold-out accuracy of the head trained on every pool image with its folder label."""
    from models.heads import SoftmaxHead

    def data(split):
        images = project.store.images(project.id, split=split)
        return (project.embeddings_of(images),
                np.array([project.class_index[i["known_class_id"]] for i in images]))

    X, y = data("pool")
    X_holdout, y_holdout = data("holdout")
    head = SoftmaxHead(len(project.class_names)).fit(X, y)
    return float(np.mean(head.predict(X_holdout) == y_holdout))


def curve_metrics(labels: np.ndarray, accuracy: np.ndarray, n_classes: int, full: float) -> dict:
    """Accuracy at 1, 3 and 10 labels per class (interpolated), the area under the curve (mean
    accuracy over the label range), and the labels needed to reach 90% / 95% of `full`."""
    def at(n):
        return float(np.interp(n, labels, accuracy)) if labels[0] <= n <= labels[-1] else None

    def reach(share):
        hit = np.flatnonzero(accuracy >= share * full)
        return int(labels[hit[0]]) if len(hit) else None

    span = labels[-1] - labels[0]
    aulc = float(np.trapezoid(accuracy, labels) / span) if span else float(accuracy[0])
    return {"acc_at_1pc": at(n_classes), "acc_at_3pc": at(3 * n_classes), "acc_at_10pc": at(10 * n_classes),
            "aulc": aulc, "labels_to_90": reach(0.90), "labels_to_95": reach(0.95)}


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def benchmark_strategies(dataset: str, strategies: list[str], repeats: int, budget: int, batch: int,
                         out: str | Path, data_dir: str | Path = "data",
                         labelers: tuple[str, ...] = ("perfect", "noisy:0.1"), log=print,
                         auto_accept: float | None = None) -> dict:
    """{labeler: {strategy: metrics averaged over seeds (+ "curves": [(labels, accuracy)])}},
    plus "full_accuracy". With `auto_accept`, the default strategy runs once more with
    auto-accept at that precision (row "auto+accept"); its curves count human labels only."""
    if auto_accept:
        strategies = [*strategies, "auto+accept"]
    out = Path(out)
    results: dict = {"full_accuracy": None}
    fulls = []
    for labeler in labelers:
        results[labeler] = {}
        for name in strategies:
            runs, accept_stats = [], []
            for seed in range(repeats):
                folder = out / "runs" / labeler.replace(":", "-") / name / str(seed)
                accepting = name.endswith("+accept")
                rows = replay(dataset, folder, strategy=name.removesuffix("+accept"), labeler=labeler,
                              seed_per_class=1, batch=batch, budget=budget, seed=seed, data_dir=data_dir,
                              log=lambda *_: None, auto_accept=auto_accept if accepting else None)
                project = Project(Store(folder / "replay" / "juicer.db"), "replay",
                                  Paths(folder / "replay", cache_dir=Paths(Path(data_dir)).cache))
                if len(fulls) < repeats:   # the same hold-out per seed whatever the strategy
                    fulls.append(full_data_accuracy(project))
                # People's labels: what a label budget buys (auto-accepted ones cost nothing).
                labels = np.array([r["labels"] - r["auto_labels"] for r in rows], dtype=float)
                accuracy = np.array([r["accuracy"] for r in rows])
                queried = [e["class_id"] for e in project.store.label_events(project.id)
                           if e["source"] == "simulated"]
                if accepting:
                    from loop.autoaccept import auto_accepted
                    truth = {i["id"]: i["known_class_id"] for i in project.store.images(project.id)}
                    auto = auto_accepted(project)
                    wrong = sum(e["class_id"] != truth[e["image_id"]] for e in auto)
                    accept_stats.append((len(auto), wrong))
                runs.append((labels, accuracy, len(project.class_names), queried, project))
                log(f"{labeler:>10} {name:>16} seed {seed}: {accuracy[0]:.3f} -> {accuracy[-1]:.3f} "
                    f"at {int(labels[-1])} labels")
            per_run = [curve_metrics(labels, acc, k, fulls[s]) for s, (labels, acc, k, _, _) in enumerate(runs)]
            summary = {m: _mean([r[m] for r in per_run]) for m in METRICS}
            unreached = {m: sum(r[m] is None for r in per_run) for m in ("labels_to_90", "labels_to_95")}
            summary["runs_not_reaching"] = unreached
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
            results[labeler][name] = summary
    results["full_accuracy"] = float(np.mean(fulls))
    return results


def print_table(results: dict, dataset: str, budget: int) -> None:
    full = results["full_accuracy"]
    print(f"\n{dataset}: full-data accuracy {full:.3f} (head on every pool label); "
          f"90% of it = {0.9 * full:.3f}, 95% = {0.95 * full:.3f}; budget {budget} labels")
    for labeler, table in results.items():
        if labeler == "full_accuracy":
            continue
        random = table.get("random", {})
        print(f"\nlabeler {labeler}")
        print(f"{'strategy':>16} {'acc@1pc':>8} {'acc@3pc':>8} {'acc@10pc':>9} {'AULC':>6} "
              f"{'to 90%':>7} {'vs rnd':>7} {'to 95%':>7} {'vs rnd':>7}")
        for name, m in table.items():
            def fmt(v, spec):
                return "-" if v is None else format(v, spec)

            def ratio(key):
                if m[key] is None or random.get(key) is None:
                    return f">{budget}" if m[key] is None else "-"
                return f"{m[key] / random[key]:.2f}"
            print(f"{name:>16} {fmt(m['acc_at_1pc'], '.3f'):>8} {fmt(m['acc_at_3pc'], '.3f'):>8} "
                  f"{fmt(m['acc_at_10pc'], '.3f'):>9} {fmt(m['aulc'], '.3f'):>6} "
                  f"{fmt(m['labels_to_90'], '.0f'):>7} {ratio('labels_to_90'):>7} "
                  f"{fmt(m['labels_to_95'], '.0f'):>7} {ratio('labels_to_95'):>7}")
        for name, m in table.items():
            if "auto_accepted" in m:
                base = table.get("auto", {})
                gain = (m["aulc"] - base["aulc"]) if base.get("aulc") is not None else None
                print(f"{name}: {m['auto_accepted']:.0f} labels auto-accepted per run, {m['auto_wrong']:.0f} of "
                      f"them wrong ({m['auto_wrong'] / max(m['auto_accepted'], 1):.1%}); area under the curve "
                      f"per human label {'-' if gain is None else f'{gain:+.3f}'} against auto alone")
        print("queried images per class (mean per run): " + "; ".join(
            f"{name}: {min(m['queried_per_class'].values()):.0f}-{max(m['queried_per_class'].values()):.0f}"
            for name, m in table.items()))


def plot(results: dict, dataset: str, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labelers = [k for k in results if k != "full_accuracy"]
    fig, axes = plt.subplots(1, len(labelers), figsize=(6 * len(labelers), 4.2), squeeze=False)
    for ax, labeler in zip(axes[0], labelers):
        for name, m in results[labeler].items():
            grid = np.array(m["curves"][0][0])
            curves = np.array([np.interp(grid, labels, acc) for labels, acc in m["curves"]])
            mean, std = curves.mean(0), curves.std(0)
            ax.plot(grid, mean, label=name)
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
        ax.axhline(0.95 * results["full_accuracy"], color="grey", ls=":", label="95% of full data")
        ax.set(title=f"{dataset}, labeler {labeler}", xlabel="labels", ylabel="hold-out accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_json(results: dict, dataset: str, path: Path) -> None:
    """Merge this dataset's figures (perfect labeler; "default" = the auto strategy) into `path`."""
    existing = json.loads(path.read_text()) if path.exists() else {}
    labelers = [k for k in results if k != "full_accuracy"]
    table = results["perfect" if "perfect" in labelers else labelers[0]]
    entry = {name: {m: table[name][m] for m in METRICS} for name in table}
    if "auto" in entry:
        entry["default"] = entry["auto"]
    existing[dataset] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=1, sort_keys=True) + "\n")
