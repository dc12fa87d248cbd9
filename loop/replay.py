"""Replay: the real labeling loop, headless, answered by a simulated labeler from a labeled
dataset's ground truth. Writes the learning curve (one row per retrain) as CSV and PNG.

    python -m loop replay --dataset demo --strategy margin --labeler noisy:0.1 --budget 200 --out runs/a

With `--review-every B --review-size R`, every B batches the labels are judged for errors
(`loop.suspects`) and a simulated reviewer answers up to R of the top suspects from ground truth,
each answer counted against the budget like a label.
"""

from __future__ import annotations

import csv
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loop.curve import curve_rows
from loop.evaluation import THRESHOLDS
from loop.project import Paths, ProjectError, open_or_create_dataset_project
from loop.queue import next_queries
from loop.settings import Settings
from loop.trainer import Trainer


@dataclass(frozen=True)
class Labeler:
    """A simulated annotator: answers from ground truth, wrong with probability `error_rate`
    (a uniformly chosen other class), taking `seconds_per_label` per answer."""

    name: str
    error_rate: float = 0.0
    seconds_per_label: float = 0.0

    def answer(self, truth: int, n_classes: int, rng: np.random.Generator) -> int:
        if self.seconds_per_label:
            time.sleep(self.seconds_per_label)
        if self.error_rate and rng.random() < self.error_rate:
            return int((truth + rng.integers(1, n_classes)) % n_classes)
        return truth


def parse_labeler(spec: str) -> Labeler:
    """'perfect', 'noisy:P' (wrong with probability P) or 'slow:S' (S seconds per label)."""
    kind, _, value = spec.partition(":")
    try:
        if kind == "perfect" and not value:
            return Labeler(spec)
        if kind == "noisy" and 0 <= float(value) < 1:
            return Labeler(spec, error_rate=float(value))
        if kind == "slow" and float(value) >= 0:
            return Labeler(spec, seconds_per_label=float(value))
    except ValueError:
        pass
    raise ValueError(f"labeler '{spec}' is not one of perfect, noisy:P (0 <= P < 1), slow:SECONDS")


CURVE_COLUMNS = ["version", "labels", "auto_labels", "accuracy", "balanced_accuracy", "ece"] + [
    f"{measure}_{rule}" for rule in ("argmax", *map("{:g}".format, THRESHOLDS))
    for measure in ("coverage", "accuracy", "errors_per_100")]


def write_curve(rows: list[dict], out: Path, title: str) -> tuple[Path, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "curve.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, CURVE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else
                             (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k])
                             for k in CURVE_COLUMNS})
    labels = [r["labels"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(labels, [r["accuracy"] for r in rows], "o-", label="hold-out accuracy")
    left.plot(labels, [r["balanced_accuracy"] for r in rows], "s--", label="balanced accuracy",
              alpha=0.7)
    left.set(xlabel="labeled training images", ylabel="accuracy", title=title, ylim=(0, 1))
    left.grid(alpha=0.3)
    left.legend()
    for threshold in (0.8, 0.9):
        key = f"{threshold:g}"
        right.plot(labels, [r[f"coverage_{key}"] for r in rows], "-", label=f"coverage at >= {key}")
        right.plot(labels, [r[f"accuracy_{key}"] for r in rows], ":",
                   label=f"accuracy of decided, >= {key}")
    right.set(xlabel="labeled training images", ylabel="share", ylim=(0, 1),
              title="auto-accept above a confidence threshold")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    png_path = out / "curve.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return csv_path, png_path


def simulated_review(project, truth_class: dict[int, int], n: int,
                     reviewer: str = "simulated-reviewer") -> tuple[int, int]:
    """Judge the labels, then answer up to `n` open suspects (in the review queue's order) from
    ground truth `truth_class` (image id -> class id). Returns (reviewed, changed)."""
    from loop import suspects

    suspects.judge(project)
    names = {c["id"]: c["name"] for c in project.class_rows}
    changed = 0
    queue = project.store.suspects(project.id, limit=n)
    for row in queue:
        right = truth_class[row["image_id"]]
        decision = "kept" if right == row["class_id"] else "changed"
        suspects.review(project, row["image_id"], reviewer, decision, names[right], row["event_id"])
        changed += decision == "changed"
    return len(queue), changed


def replay(dataset: str, out: str | Path, strategy: str = "auto", labeler: str = "perfect",
           seed_per_class: int = 1, batch: int = 10, budget: int = 100, seed: int = 0,
           data_dir: str | Path = "data", backbone: str | None = None,
           holdout_size: int = 500, log=print, on_progress=None,
           auto_accept: float | None = None, seed_picker: str = "random",
           review_every: int = 0, review_size: int = 0) -> list[dict]:
    """Run the loop until `budget` simulated answers (labels beyond the seeds, and reviews) are
    spent; returns the curve rows and writes `out`/curve.csv and `out`/curve.png. `seed_picker`
    "cold-start" lets the cold-start strategy pick the seed images (see `Project.draw_seeds`)
    instead of drawing them at random per class. `review_every` batches (0: never), up to
    `review_size` of the open suspects are reviewed from ground truth by "simulated-reviewer"."""
    if review_every < 0 or review_size < 0 or bool(review_every) != bool(review_size):
        raise ValueError("review_every and review_size are both 0 (no review) or both positive")
    simulated = parse_labeler(labeler)
    settings = Settings(seeds_per_class=seed_per_class, seed_picker=seed_picker,
                        strategy=strategy, batch_size=batch,
                        seed=seed, holdout_size=holdout_size, auto_accept_precision=auto_accept,
                        **({"backbone": backbone} if backbone else {}))
    out = Path(out)
    work = out / "replay"
    if work.exists():
        shutil.rmtree(work)  # a replay's own scratch project: rerunning starts it afresh
    data_dir = Path(data_dir)
    paths = Paths(work, cache_dir=Paths(data_dir).cache)
    project = open_or_create_dataset_project(dataset, paths, name="replay", settings=settings,
                                             data_dir=data_dir, on_progress=on_progress)
    pool = project.store.images(project.id, split="pool")
    if any(i["known_class_id"] is None for i in pool):
        raise ProjectError(f"'{dataset}' has unlabeled images; a replay needs a labeled folder "
                           "(one sub-folder per class)")
    truth = {i["id"]: project.class_index[i["known_class_id"]] for i in pool}
    truth_class = {i["id"]: i["known_class_id"] for i in project.store.images(project.id)}
    rng = np.random.default_rng([seed, 3])
    trainer = Trainer(project, rank_queue=False, judge_labels=False)   # starts from the version trained on the seeds
    spent = batches = 0
    try:
        while spent < budget:
            latest = trainer.latest
            queries = next_queries(project, min(batch, budget - spent),
                                   head=latest and latest["head"],
                                   model_version=latest and latest["version"], rng=rng)
            if not queries:
                log("the pool is fully labeled")
                break
            answers = [(q.image_id, simulated.answer(truth[q.image_id], len(project.class_names), rng))
                       for q in queries]
            class_ids = [(i, project.class_rows[c]["id"]) for i, c in answers]
            project.store.add_labels(project.id, class_ids, annotator=f"simulated-{simulated.name}",
                                     source="simulated", origins=[q.origin for q in queries])
            spent += len(answers)
            batches += 1
            ticket = trainer.request()
            if not simulated.seconds_per_label:  # a slow labeler keeps labeling while it trains
                trainer.wait(ticket)
            if review_every and batches % review_every == 0 and spent < budget:
                trainer.wait(ticket)
                reviewed, changed = simulated_review(project, truth_class,
                                                     min(review_size, budget - spent))
                spent += reviewed
                if changed:
                    trainer.wait(trainer.request())
                log(f"reviewed {reviewed} suspect(s), {changed} changed")
            last = project.store.evaluations(project.id)[-1]
            log(f"labels {spent:5d}/{budget}  model v{last['version']}  "
                f"hold-out accuracy {last['accuracy']:.3f}")
        trainer.wait()
    finally:
        trainer.close()
    if trainer.errors:
        raise RuntimeError("retraining failed:\n" + trainer.errors[-1])
    rows = curve_rows(project)
    if auto_accept:
        from loop.autoaccept import audit_report, auto_accepted
        auto = auto_accepted(project)
        wrong = sum(e["class_id"] != truth_class[e["image_id"]] for e in auto)
        report = audit_report(project)
        log(f"auto-accept at precision {auto_accept}: {len(auto)} labels, {wrong} wrong "
            f"({(1 - wrong / len(auto)) if auto else float('nan'):.3f} precision); audit measured "
            f"{report['measured_precision']} on {report['reviewed']} reviewed")
        for row in rows:
            row["auto_wrong"] = wrong
    write_curve(rows, out, f"{dataset}: {strategy}, {labeler}")
    return rows

