"""The fine-tuning job as a project runs it (`loop.tuning.run`), timed stage by stage, with what it
would buy: hold-out accuracy of a head on the tuned backbone against one on the frozen backbone,
both trained on the same labels (k per class drawn at random from the pool, as benchmark-adapt
draws them, beside the project's seeds), in the same run, and what the job decided (it adopts
only a gain beyond the hold-out's noise, see loop/tuning.py). Each job runs in a throwaway
project; the tuned embeddings are removed after.

    python bench/tune_job.py [--datasets demo,fashion-mnist] [--per-class 3,10] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(dataset: str, per_class: int, data_dir: Path, work: Path) -> dict:
    from loop import tuning
    from loop.headbench import draw_per_class
    from loop.project import Paths, open_or_create_dataset_project

    paths = Paths(work / f"{dataset.replace(':', '-')}-{per_class}", cache_dir=Paths(data_dir).cache)
    project = open_or_create_dataset_project(dataset, paths, name="tune", data_dir=data_dir)
    store = project.store
    labeled = set(store.current_labels(project.id, split="pool"))
    pool = [i for i in store.images(project.id, split="pool")]
    y = np.array([project.class_index[i["known_class_id"]] for i in pool])
    rows = draw_per_class(y, per_class, np.random.default_rng([per_class, 0]))
    store.add_labels(project.id, [(pool[r]["id"], pool[r]["known_class_id"]) for r in rows
                                  if pool[r]["id"] not in labeled], annotator="bench", source="human")
    started = time.perf_counter()
    row = tuning.run(project, adopt="if-better")
    wall = time.perf_counter() - started
    retrain_started = time.perf_counter()
    project.retrain(force=True)
    retrain = time.perf_counter() - retrain_started
    for job in store.backbone_versions(project.id):      # the tuned embeddings are not kept
        shutil.rmtree(Path(paths.cache) / job["key"], ignore_errors=True)
    return {"dataset": dataset, "per_class": per_class, "labels": row["n_labels"], "images": row["total"],
            "tune_s": row["tune_seconds"], "embed_s": row["embed_seconds"], "job_s": wall,
            "retrain_s": retrain, "images_per_s": row["total"] / row["embed_seconds"],
            "holdout_frozen": row["holdout_before"], "holdout_tuned": row["holdout_after"],
            "n_holdout": row["n_holdout"], "decision": row["status"], "why": row["message"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="demo,fashion-mnist")
    parser.add_argument("--per-class", default="3,10")
    parser.add_argument("--data", default="data")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tune-job-"))
    results = []
    try:
        for dataset in args.datasets.split(","):
            for k in (int(n) for n in args.per_class.split(",")):
                results.append(measure(dataset, k, Path(args.data), work))
                r = results[-1]
                print(f"{dataset} {k}/class: job {r['job_s']:.0f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'set':<14}{'labels':>7}{'images':>7}{'tune s':>8}{'embed s':>8}{'img/s':>7}{'job s':>7}"
          f"{'retrain s':>10}{'frozen':>8}{'tuned':>8}{'points':>8}  decision")
    for r in results:
        print(f"{r['dataset']:<14}{r['labels']:>7}{r['images']:>7}{r['tune_s']:>8.1f}{r['embed_s']:>8.1f}"
              f"{r['images_per_s']:>7.0f}{r['job_s']:>7.0f}{r['retrain_s']:>10.2f}{r['holdout_frozen']:>8.3f}"
              f"{r['holdout_tuned']:>8.3f}{100 * (r['holdout_tuned'] - r['holdout_frozen']):>+8.1f}  "
              f"{r['decision']}")
    if args.json:
        print(json.dumps({"jobs": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
