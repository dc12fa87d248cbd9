"""Does adapting the backbone pay on few labels? The frozen backbone with the default head against
augmented views of each labeled image and against fine-tuning the backbone's top blocks, on the
same hold-out and the same label draws, in the same run:

    python -m loop benchmark-adapt --datasets demo,fashion-mnist --repeats 3 --json

Labels are drawn k per class at random from the pool (seed r, as the random strategy's replay
draws them and as benchmark-heads does) for k = 1, 3, 10; every variant then trains the product's
default head on those labels (the rest of the pool unlabeled, the hold-out never seen) and is
scored on the hold-out. "auc" is the area under accuracy against log labels per class from 1 to
10, divided by its width (the mean accuracy over that range of the curve). "retrain_s" is what
one retrain at 10 per class costs a project: the head's fit, plus for the views their embedding
(per new label), plus for fine-tuning the tuning and recomputing every image's features.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from loop.headbench import PER_CLASS, draw_per_class
from loop.project import Paths, Project, open_or_create_dataset_project
from loop.settings import Settings

VIEWS = 4
START_BLOCK = 15          # Lite0's last MBConv block (stage 7, 7x7x192 in): the seeds' "top block"
VARIANTS = ("frozen", "augment", "fine-tune")


def area_under_curve(per_class: tuple[int, ...], accuracy: list[float]) -> float:
    """Mean accuracy over log labels per class (trapezoids), from the first to the last point.

    >>> area_under_curve((1, 10), [0.5, 0.7])
    0.6
    """
    x = np.log(np.asarray(per_class, float))
    y = np.asarray(accuracy, float)
    return round(float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0])), 12)


def _files(project: Project, images: list[dict]) -> list[Path]:
    return [project.root / i["path"] for i in images]


def _run(paths: list[Path], fn, size: int) -> np.ndarray:
    """fn over the decoded images of `paths`, batch by batch, rows in order."""
    from models.extract import embed_files

    batches = list(embed_files(paths, fn, size))
    failed = [f for b in batches for f in b.failures.values()]
    if failed:
        raise ValueError(f"{len(failed)} images could not be decoded, e.g. {failed[0]}")
    return np.concatenate([b.embeddings for b in batches])


def adapt_dataset(project: Project, repeats: int, views: int = VIEWS, start_block: int = START_BLOCK,
                  per_class=PER_CLASS, log=print) -> dict:
    """{variant: {"acc_at_Kpc": [per repeat], "retrain_s": [...]}} plus "_sizes" for one project."""
    from models.augment import view_embedder
    from models.backbones import BACKBONES, load_backbone
    from models.finetune import features, fine_tune, split

    spec = BACKBONES[project.settings.backbone]
    backbone = load_backbone(project.settings.backbone)
    size = backbone.image_size
    pool = project.store.images(project.id, split="pool")
    holdout = project.store.images(project.id, split="holdout")
    y_pool = np.array([project.class_index[i["known_class_id"]] for i in pool])
    y_hold = np.array([project.class_index[i["known_class_id"]] for i in holdout])
    X_pool, X_hold = project.embeddings_of(pool), project.embeddings_of(holdout)
    k = len(project.class_names)

    draws = {(n, r): draw_per_class(y_pool, n, np.random.default_rng([r, n]))
             for n in per_class for r in range(repeats)}
    drawn = np.unique(np.concatenate(list(draws.values())))

    started = time.perf_counter()
    at = {int(row): j for j, row in enumerate(drawn)}
    view_embeddings = (_run(_files(project, [pool[i] for i in drawn]), view_embedder(backbone.embed, views), size)
                       .reshape(len(drawn), views, -1).transpose(1, 0, 2))    # (views, drawn, D)
    seconds_per_view = (time.perf_counter() - started) / (views * len(drawn))
    log(f"  {views} views of {len(drawn)} drawn images: {seconds_per_view * 1000:.0f} ms per view")

    started = time.perf_counter()
    bottom, top = split(backbone.network, spec.width, spec.depth, start_block)
    shape = tuple(bottom.outputs[0].shape[1:])

    def activations(batch):
        return np.asarray(bottom.predict_on_batch(backbone.preprocess(batch)), np.float32).reshape(len(batch), -1)

    A_pool = _run(_files(project, pool), activations, size).reshape(-1, *shape)
    A_hold = _run(_files(project, holdout), activations, size).reshape(-1, *shape)
    log(f"  activations entering block {start_block} {shape}: {time.perf_counter() - started:.0f} s")

    results = {v: {} for v in VARIANTS}
    for (n, r), rows in draws.items():
        rest = np.setdiff1d(np.arange(len(y_pool)), rows)

        def scored(variant, X_train, y_train, unlabeled, X_test, extra_s=0.0):
            head = project.new_head(seed=r)
            t = time.perf_counter()
            head.fit(X_train, y_train, unlabeled=unlabeled)
            fit_s = time.perf_counter() - t
            accuracy = float((head.predict(X_test) == y_hold).mean())
            results[variant].setdefault(f"acc_at_{n}pc", []).append(accuracy)
            if n == per_class[-1]:
                results[variant].setdefault("retrain_s", []).append(fit_s + extra_s)

        scored("frozen", X_pool[rows], y_pool[rows], X_pool[rest], X_hold)
        V = view_embeddings[:, [at[int(i)] for i in rows]].reshape(-1, X_pool.shape[1])
        scored("augment", np.concatenate([X_pool[rows], V]), np.concatenate([y_pool[rows]] * (views + 1)),
               X_pool[rest], X_hold, extra_s=seconds_per_view * views * k)   # one batch of k labels' views
        t = time.perf_counter()
        tuned = fine_tune(top, A_pool[rows], y_pool[rows], k, seed=r)
        F_pool, F_hold = features(tuned, A_pool), features(tuned, A_hold)
        tune_s = time.perf_counter() - t
        scored("fine-tune", F_pool[rows], y_pool[rows], F_pool[rest], F_hold, extra_s=tune_s)
        log(f"  {n} per class, draw {r}: " + ", ".join(
            f"{v} {results[v][f'acc_at_{n}pc'][-1]:.3f}" for v in VARIANTS) + f" (tuning {tune_s:.0f} s)")
    for variant in VARIANTS:
        runs = results[variant]
        runs["auc"] = [area_under_curve(per_class, [runs[f"acc_at_{n}pc"][r] for n in per_class])
                       for r in range(repeats)]
    results["_sizes"] = {"pool": len(pool), "holdout": len(holdout), "classes": k, "views": views,
                         "start_block": start_block, "seconds_per_view": seconds_per_view}
    return results


def benchmark_adapt(datasets: list[str], repeats: int = 3, views: int = VIEWS,
                    start_block: int = START_BLOCK, data_dir: str | Path = "data",
                    work: str | Path | None = None, log=print) -> dict:
    data_dir = Path(data_dir)
    work = Path(work) if work else data_dir / "bench" / "adapt"
    results = {}
    for dataset in datasets:
        paths = Paths(work / dataset.replace(":", "-"), cache_dir=Paths(data_dir).cache)
        project = open_or_create_dataset_project(dataset, paths, name="adapt", data_dir=data_dir,
                                                 settings=Settings(holdout_size=500))
        started = time.perf_counter()
        log(f"{dataset}:")
        results[dataset] = adapt_dataset(project, repeats, views, start_block, log=log)
        log(f"{dataset}: {time.perf_counter() - started:.0f} s")
    return results


METRICS = ("acc_at_1pc", "acc_at_3pc", "acc_at_10pc", "auc", "retrain_s")


def print_report(results: dict, log=print) -> None:
    for dataset, table in results.items():
        sizes = table["_sizes"]
        log(f"\n{dataset}: {sizes['classes']} classes, pool {sizes['pool']:,}, hold-out "
            f"{sizes['holdout']:,}; {sizes['views']} views per label; fine-tuning from block "
            f"{sizes['start_block']}; mean over draws (points against frozen, +- s.e. of the paired difference)")
        log(f"{'variant':<12}" + "".join(f"{m:>18}" for m in METRICS))
        base = table["frozen"]
        for variant in VARIANTS:
            cells = []
            for metric in METRICS:
                runs = np.array(table[variant][metric])
                if metric == "retrain_s":
                    cells.append(f"{np.median(runs):>17.2f}s")
                    continue
                text = f"{runs.mean():.3f}"
                if variant != "frozen":
                    diff = 100 * (runs - np.array(base[metric]))
                    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
                    text += f" {diff.mean():+.1f}+-{se:.1f}"
                cells.append(f"{text:>18}")
            log(f"{variant:<12}" + "".join(cells))


def json_line(results: dict) -> str:
    """{dataset: {variant: {"acc_at_1pc", "acc_at_3pc", "acc_at_10pc", "auc", "retrain_s"}}}
    (accuracies are means over the draws, retrain_s the median)."""
    return json.dumps({d: {v: {m: round(float(np.median(t[v][m]) if m == "retrain_s" else np.mean(t[v][m])), 4)
                               for m in METRICS} for v in VARIANTS}
                       for d, t in results.items()})
