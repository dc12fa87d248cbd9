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

Then, with 1,000 pool labels added, what runs on every retrain and every status page:
`labeled("pool")`, `unlabeled_pool(labeled ids, limit=2000)` and `status()`, each against its
code before (the whole split's rows read at once), in the same run. The stub cache answers each
hash with a vector of one float, so what is measured is reading the project, not embeddings.

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
READS = ("labeled('pool')", "unlabeled_pool(2000)", "status()")
LABELS = 1_000
UNLABELED_LIMIT = 2_000


class EveryHashCached:
    """An embedding cache that has every hash (the embed step then only lists the project),
    each a vector of one float."""

    def missing(self, hashes):
        return []

    def get(self, hashes):
        import numpy as np

        return np.zeros((len(hashes), 1), np.float32)


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


def add_labels(project) -> None:
    """LABELS pool images labeled (every 7th of the pool, from its folder class), as people would."""
    pool = [i for rows in project.store.iter_images(project.id, split="pool", columns=["known_class_id"])
            for i in rows][::7][:LABELS]
    project.store.add_labels(project.id, [(i["id"], i["known_class_id"]) for i in pool],
                             annotator="bench", source="simulated")


def labeled_before(project, split):
    """`Project.labeled` before: a dict of every image of the split for the labeled ids' hashes."""
    import numpy as np

    labels = project.store.current_labels(project.id, split=split)
    ids = np.array(sorted(labels), dtype=np.int64)
    rows = {i["id"]: i["hash"] for i in project.store.images(project.id, split=split)}
    X = project.cache_for(None).get([rows[i] for i in ids])
    return ids, X, np.array([project.class_index[labels[i]] for i in ids], dtype=np.int64)


def unlabeled_pool_before(project, labeled_ids, limit, seed=0):
    """`Project.unlabeled_pool` before: every pool row read at once."""
    import numpy as np

    cache = project.cache_for(None)
    taken = {int(i) for i in labeled_ids}
    hashes = [i["hash"] for i in project.store.images(project.id, split="pool") if i["id"] not in taken]
    missing = set(cache.missing(hashes))
    hashes = [h for h in dict.fromkeys(hashes) if h not in missing]
    if len(hashes) > limit:
        rng = np.random.default_rng([project.settings.seed, seed, 11])
        hashes = [hashes[i] for i in np.sort(rng.choice(len(hashes), limit, replace=False))]
    return cache.get(hashes)


def status_before(project) -> dict:
    """What `Project.status` read before: every image row and every label, grouped in Python."""
    from loop.project import copy_groups, known_classes

    images = project.store.images(project.id)
    labels = project.store.current_labels(project.id)
    split_of = {i["id"]: i["split"] for i in images}
    groups = [group for group in copy_groups(images).values() if len(group) > 1]
    conflicts = [g for g in groups if len(known_classes(g)) > 1]
    return {"images": len(images), "duplicates": len(groups), "conflicts": len(conflicts),
            "labeled_pool": sum(split_of.get(i) == "pool" for i in labels)}


def run_reads(project, traced: bool) -> dict:
    """{read: {"new", "old"}}: seconds (or peak traced MB) of each read, the new code then the old."""
    ids = project.labeled("pool")[0]
    reads = {"labeled('pool')": (lambda: project.labeled("pool"),
                                 lambda: labeled_before(project, "pool")),
             "unlabeled_pool(2000)": (lambda: project.unlabeled_pool(ids, UNLABELED_LIMIT),
                                      lambda: unlabeled_pool_before(project, ids, UNLABELED_LIMIT)),
             "status()": (project.status, lambda: status_before(project))}
    out = {}
    for name in READS:
        out[name] = {}
        for which, read in zip(("new", "old"), reads[name]):
            if traced:
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
            started = time.perf_counter()
            result = read()
            out[name][which] = ((tracemalloc.get_traced_memory()[1] - base) / 2**20 if traced
                                else time.perf_counter() - started)
            del result
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
            add_labels(project)
            project.labeled("pool")        # a first call pays for the page cache: warm both alike
            read_seconds = run_reads(project, traced=False)
            store, project = build(tmp / "traced.db", n)
            tracemalloc.start()
            peaks = run_steps(project, traced=True)
            old = baseline_mb(store, project.id)
            add_labels(project)
            read_peaks = run_reads(project, traced=True)
            tracemalloc.stop()
            runs.append({"images": n, "holdout": holdout, "seeds": seeds, "seconds": seconds,
                         "peak_mb": peaks, "peak_mb_max": max(peaks.values()),
                         "old_listing_mb": old, "pool_labels": len(project.labeled("pool")[0]),
                         "reads_peak_mb": read_peaks, "reads_seconds": read_seconds})
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
    print(f"\nwith up to {LABELS:,} pool labels added: peak MB (and milliseconds) of each read, "
          "new / old (the whole split's rows at once)")
    print(f"{'images':>8}{'labels':>7}" + "".join(f"{s:>32}" for s in READS))
    for r in f["runs"]:
        print(f"{r['images']:>8,}{r['pool_labels']:>7,}" + "".join(
            (f"{r['reads_peak_mb'][s]['new']:.1f} / {r['reads_peak_mb'][s]['old']:.1f} MB "
             f"({r['reads_seconds'][s]['new'] * 1e3:.0f} / {r['reads_seconds'][s]['old'] * 1e3:.0f} ms)"
             ).rjust(32) for s in READS))
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
