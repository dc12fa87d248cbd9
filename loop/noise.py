"""What finding wrong labels buys: replays with a `noisy:P` labeler, the same seeds for every arm,
scored in one run.

    python -m loop benchmark-noise --dataset demo --noise 0.1 --repeats 3 --budget 600 --json

Per seed: random and the default strategy without review, and the default strategy with a
simulated reviewer answering the top suspects from ground truth every few batches (each answer
costs one label). From the default run without review: the share of truly wrong labels among
the top 5% suspects (precision) and the share of the injected errors found there (recall).
Labels to 95% of full-data accuracy per arm count every answer: labels and reviews.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from loop import suspects
from loop.benchmark import censored_median, dataset_label, full_data_accuracy, labels_to_reach
from loop.project import Paths, Project
from loop.replay import replay
from loop.store import Store

ARMS = ("random", "default", "default_with_review")


def top_suspects_found(project: Project) -> dict:
    """Judge the labels in force and score the top 5% of the training-pool suspects against the
    images' folder classes: {"precision", "recall", "wrong", "judged", "top"}."""
    suspects.judge(project)
    truth = {i["id"]: i["known_class_id"] for i in project.store.images(project.id)}
    labels = project.store.current_labels(project.id, split="pool")
    wrong = {i for i, c in labels.items() if c != truth[i]}
    pool = [s for s in project.store.suspects(project.id, issues_only=False) if s["split"] == "pool"]
    top = pool[:suspects.top_count(len(pool))]
    hits = sum(s["image_id"] in wrong for s in top)
    return {"precision": hits / len(top) if top else None,
            "recall": hits / len(wrong) if wrong else None,
            "wrong": len(wrong), "judged": len(pool), "top": len(top)}


def answers_at_versions(project: Project) -> dict[int, int]:
    """{model version: answers spent by then}: labels people gave (in force, less seeds and
    auto-accepted) plus reviews stored before the version was trained."""
    store = project.store
    events = store.label_events(project.id)
    reviews = sorted(r["created_at"] for r in store.reviews(project.id))
    spent = {}
    for version in store.model_versions(project.id):
        asked = sum(e["source"] == "simulated" and e["id"] <= version["last_event_id"] for e in events)
        spent[version["version"]] = asked + int(np.searchsorted(reviews, version["created_at"]))
    return spent


def benchmark_noise(dataset: str, noise: float, repeats: int, budget: int, batch: int,
                    out: str | Path, data_dir: str | Path = "data", review_every: int = 3,
                    review_size: int = 5, log=print) -> dict:
    """{"precision_at_5pct", "recall_at_5pct", "labels_to_95": {arm: censored median},
    "runs_reaching_95": {arm: n}, "per_run": [...], "review": {...}, "full_accuracy"}."""
    out = Path(out)
    labeler = f"noisy:{noise:g}"
    per_run = []
    for seed in range(repeats):
        run: dict = {"seed": seed}
        for arm in ARMS:
            folder = out / "runs" / arm / str(seed)
            reviewing = arm == "default_with_review"
            rows = replay(dataset, folder, strategy="random" if arm == "random" else "auto",
                          labeler=labeler, seed_per_class=1, batch=batch, budget=budget, seed=seed,
                          data_dir=data_dir, log=lambda *_: None,
                          review_every=review_every if reviewing else 0,
                          review_size=review_size if reviewing else 0)
            project = Project(Store(folder / "replay" / "juicer.db"), "replay",
                              Paths(folder / "replay", cache_dir=Paths(Path(data_dir)).cache))
            if "full_accuracy" not in run:   # the same hold-out per seed whatever the arm
                run["full_accuracy"] = full_data_accuracy(project)["accuracy"]
            spent = answers_at_versions(project)
            cost = np.array([spent[r["version"]] for r in rows], dtype=float)
            accuracy = np.array([r["accuracy"] for r in rows])
            run[arm] = {"labels_to_95": labels_to_reach(cost, accuracy, 0.95 * run["full_accuracy"]),
                        "final_accuracy": float(accuracy[-1]), "answers": int(cost[-1])}
            if arm == "default":
                run["found"] = top_suspects_found(project)
            if reviewing:
                reviews = project.store.reviews(project.id)
                truth = {i["id"]: i["known_class_id"] for i in project.store.images(project.id)}
                labels = project.store.current_labels(project.id, split="pool")
                run[arm].update(reviews=len(reviews),
                                changed=sum(r["decision"] == "changed" for r in reviews),
                                wrong_left=sum(c != truth[i] for i, c in labels.items()),
                                labels_in_force=len(labels))
            log(f"seed {seed} {arm:>20}: accuracy {accuracy[0]:.3f} -> {accuracy[-1]:.3f} at "
                f"{int(cost[-1])} answers; to 95% of full data: "
                f"{run[arm]['labels_to_95'] if run[arm]['labels_to_95'] is not None else 'not reached'}")
        per_run.append(run)
    found = [r["found"] for r in per_run]

    def mean(key):
        values = [f[key] for f in found if f[key] is not None]
        return float(np.mean(values)) if values else None

    reviewed = [r["default_with_review"] for r in per_run]
    return {
        "precision_at_5pct": mean("precision"), "recall_at_5pct": mean("recall"),
        "labels_to_95": {arm: censored_median([r[arm]["labels_to_95"] for r in per_run]) for arm in ARMS},
        "runs_reaching_95": {arm: sum(r[arm]["labels_to_95"] is not None for r in per_run) for arm in ARMS},
        "full_accuracy": float(np.mean([r["full_accuracy"] for r in per_run])),
        "review": {"reviews": float(np.mean([r["reviews"] for r in reviewed])),
                   "changed": float(np.mean([r["changed"] for r in reviewed])),
                   "wrong_left": float(np.mean([r["wrong_left"] for r in reviewed])),
                   "every": review_every, "size": review_size},
        "noise": noise, "budget": budget, "batch": batch, "runs": repeats, "per_run": per_run,
    }


def never_worse(result: dict) -> bool:
    """The target: default with review needs no more answers than random to reach 95% of
    full-data accuracy, run by run where random got there (a run of review that did not get
    there where random did is worse), and in the censored median."""
    for run in result["per_run"]:
        mine, random = run["default_with_review"]["labels_to_95"], run["random"]["labels_to_95"]
        if random is not None and (mine is None or mine > random):
            return False
    mine, random = result["labels_to_95"]["default_with_review"], result["labels_to_95"]["random"]
    return random is None or (mine is not None and mine <= random)


def print_table(result: dict, dataset: str) -> None:
    budget = result["budget"]

    def need(value):
        return f">{budget}" if value is None else f"{value:.0f}"

    print(f"\n{dataset}: labeler noisy:{result['noise']:g}, budget {budget} answers, batch "
          f"{result['batch']}, {result['runs']} seed(s); full-data accuracy "
          f"{result['full_accuracy']:.3f}, 95% of it {0.95 * result['full_accuracy']:.3f}")
    print(f"top 5% suspects of the default run at its end: precision "
          f"{_fmt(result['precision_at_5pct'])}, recall {_fmt(result['recall_at_5pct'])} (per run: "
          + ", ".join(f"{_fmt(r['found']['precision'])}/{_fmt(r['found']['recall'])} of "
                      f"{r['found']['wrong']} wrong in {r['found']['judged']}" for r in result["per_run"]) + ")")
    review = result["review"]
    print(f"review every {review['every']} batches, up to {review['size']} suspects: "
          f"{review['reviews']:.0f} reviews per run, {review['changed']:.0f} changed a wrong label; "
          f"{review['wrong_left']:.0f} wrong labels left in force at the end")
    print(f"{'arm':>20} {'to 95%':>7} {'reached':>8} {'per run':>24}")
    for arm in ARMS:
        runs = ", ".join(need(r[arm]["labels_to_95"]) for r in result["per_run"])
        print(f"{arm:>20} {need(result['labels_to_95'][arm]):>7} "
              f"{result['runs_reaching_95'][arm]}/{result['runs']:<6} {runs:>24}")
    print("default with review " + ("never worse than random" if never_worse(result) else
                                    "WORSE than random in some run") +
          " in answers to 95% of full-data accuracy (reviews counted as labels)")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_json(result: dict, dataset: str, path: Path, command: str) -> None:
    """Merge this dataset's figures into `path` under its name, with the command."""
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[dataset_label(dataset)] = {k: v for k, v in result.items()}
    existing.setdefault("_commands", {})[dataset_label(dataset)] = command
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=1, sort_keys=True) + "\n")
