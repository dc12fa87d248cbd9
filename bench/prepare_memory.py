"""Peak Python memory of the steps after a folder import, at three project sizes: flat past two
chunks of rows (one being read while the one before is in use), where the rows they read were a
list of every image's dict before.

Stores N image rows straight into a fresh SQLite database (a labeled project of 10 classes; 1 in
20 files copied once more into its own class folder, 1 in 2,000 copied into another class's
folder, so there are duplicates and ambiguous copies to group; no files: neither draw reads one),
then runs what `Project.prepare` runs before the first retrain: the embed step's listing (every
hash answered as cached by a stub, so nothing is embedded: what is measured is reading the
project), `draw_holdout`, `draw_seeds`, and `embedded_backbones`. Each step once timed, once under
tracemalloc (a fresh copy of the project each time: the draws write). The baseline is what each
of those steps began with before: `store.images(...)` (a dict per image) grouped by
`copy_groups`, measured in the same run.

    python bench/prepare_memory.py [--sizes 10000,40000,160000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CLASSES = 10
STEPS = ("embed listing", "draw_holdout", "draw_seeds", "embedded_backbones")


class EveryHashCached:
    """An embedding cache that has every hash (the embed step then only lists the project)."""

    def missing(self, hashes):
        return []


def build(database: Path, n: int):
    """A store holding one labeled project of `n` usable images (see the module docstring)."""
    from loop.project import IMPORT_CHUNK, Paths, Project
    from loop.settings import Settings
    from loop.store import Store

    store = Store(database)
    pid = store.create_project("bench", "/nowhere", Settings().to_json(),
                               [f"class{c}" for c in range(CLASSES)])
    class_ids = [c["id"] for c in store.classes(pid)]
    rows = []
    for i in range(n):
        if i % 20 == 19:            # a copy of the file before, in its class folder
            source, klass = i - 1, (i - 1) % CLASSES
        elif i % 2000 == 1998:      # a copy of the file before, in another class's folder
            source, klass = i - 1, i % CLASSES
        else:
            source, klass = i, i % CLASSES
        rows.append({"path": f"class{klass}/{i:07d}.png", "hash": f"{source:064x}",
                     "split": "pool", "known_class_id": class_ids[klass]})
        if len(rows) == IMPORT_CHUNK:
            store.add_images(pid, rows)
            rows = []
    store.add_images(pid, rows)
    project = Project(store, "bench", Paths(database.parent / "data"))
    stub = EveryHashCached()
    project.cache_for = lambda backbone=None: stub
    return store, project


def run_steps(project, traced: bool) -> dict:
    """Seconds (or peak traced MB) of each step, run in the order `prepare` runs them."""
    steps = {"embed listing": project.embed, "draw_holdout": project.draw_holdout,
             "draw_seeds": project.draw_seeds, "embedded_backbones": project.embedded_backbones}
    out = {}
    for name in STEPS:
        if traced:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        steps[name]()
        out[name] = ((tracemalloc.get_traced_memory()[1] - base) / 2**20 if traced
                     else time.perf_counter() - started)
    return out


def baseline_mb(store, project_id: int) -> float:
    """Peak MB of the old first step: every usable image row, as dicts, grouped by content."""
    from loop.project import copy_groups

    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    images = store.images(project_id)
    groups = copy_groups(images)
    peak = tracemalloc.get_traced_memory()[1] - base
    del images, groups
    return peak / 2**20


def measure(sizes: list[int]) -> dict:
    from loop.project import PREPARE_CHUNK

    runs = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _, project = build(tmp / "timed.db", n)
            seconds = run_steps(project, traced=False)
            holdout = len(project.store.images(project.id, split="holdout"))
            seeds = sum(e["source"] == "seed" for e in project.store.label_events(project.id))
            store, project = build(tmp / "traced.db", n)
            tracemalloc.start()
            peaks = run_steps(project, traced=True)
            old = baseline_mb(store, project.id)
            tracemalloc.stop()
            runs.append({"images": n, "holdout": holdout, "seeds": seeds, "seconds": seconds,
                         "peak_mb": peaks, "peak_mb_max": max(peaks.values()),
                         "old_listing_mb": old})
    return {"prepare_chunk": PREPARE_CHUNK, "runs": runs, "load_average": os.getloadavg()[0]}


def report(f: dict) -> None:
    print(f"peak Python memory (tracemalloc, MB) of the steps after an import, rows read "
          f"{f['prepare_chunk']:,} at a time; old: store.images + copy_groups")
    print(f"{'images':>8}" + "".join(f"{s:>20}" for s in STEPS) + f"{'old listing':>13}"
          + f"{'all steps s':>13}")
    for r in f["runs"]:
        print(f"{r['images']:>8,}" + "".join(f"{r['peak_mb'][s]:>20.1f}" for s in STEPS)
              + f"{r['old_listing_mb']:>13.1f}" + f"{sum(r['seconds'].values()):>13.2f}")
    for r in f["runs"]:
        print(f"{r['images']:,} images: hold-out {r['holdout']}, seeds {r['seeds']}; seconds "
              + ", ".join(f"{s} {r['seconds'][s]:.2f}" for s in STEPS))
    print(f"load average at the end {f['load_average']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,40000,160000", help="image counts, comma-separated")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    figures = measure([int(n) for n in args.sizes.split(",")])
    report(figures)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
