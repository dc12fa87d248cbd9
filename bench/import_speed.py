"""Folder import time and peak Python memory at two folder sizes: linear time, flat memory.

Writes N tiny real PNG files (16x16 gray, each distinct) into 10 class folders of a temp
folder (or, with --flat, into one folder imported as an unlabeled project), plus one empty file per 10,000 (kept as skipped), then imports them with
`loop.project.import_folder` (streamed scan, hashing, IMPORT_CHUNK rows per transaction; no
embedding) into a fresh SQLite database: once timed, once under tracemalloc for the peak of
Python's allocations (tracemalloc slows Python down, so it is not timed). The page cache is warm
for both (the files were just written): the figures are the import's own cost, not the disk's.

    python bench/import_speed.py [--sizes 10000,40000] [--flat] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CLASSES = 10


def write_pngs(folder: Path, count: int, flat: bool = False) -> None:
    import numpy as np
    from PIL import Image

    def place(i: int) -> Path:
        return folder if flat else folder / f"class{i % CLASSES}"

    for c in range(1 if flat else CLASSES):
        place(c).mkdir(parents=True)
    for i in range(count):
        pixels = np.full((16, 16), i % 251, np.uint8)
        pixels[0, :8] = np.frombuffer(i.to_bytes(8, "little"), np.uint8)   # distinct content
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        (place(i) / f"{i:07d}.png").write_bytes(buffer.getvalue())
    for k in range(max(1, count // 10_000)):
        (place(k) / f"empty-{k}.png").write_bytes(b"")


def import_once(folder: Path, database: Path, flat: bool) -> tuple[float, object, int]:
    from loop.project import import_folder
    from loop.store import Store

    store = Store(database)
    started = time.perf_counter()
    classes = [f"class{c}" for c in range(CLASSES)] if flat else None
    project_id = import_folder(store, "bench", folder, class_names=classes)
    return time.perf_counter() - started, store, project_id


def measure(sizes: list[int], flat: bool = False) -> dict:
    from loop.project import IMPORT_CHUNK, SORT_RUN

    runs = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            started = time.perf_counter()
            write_pngs(tmp / "folder", n, flat)
            write_s = time.perf_counter() - started
            seconds, store, project_id = import_once(tmp / "folder", tmp / "timed.db", flat)
            rows = store.images(project_id, status=None)
            ok, skipped = (sum(r["status"] == s for r in rows) for s in ("ok", "skipped"))
            del rows
            tracemalloc.start()
            import_once(tmp / "folder", tmp / "traced.db", flat)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            runs.append({"files": ok + skipped, "images": ok, "skipped": skipped,
                         "write_s": write_s, "import_s": seconds,
                         "s_per_10k_files": seconds * 10_000 / (ok + skipped),
                         "files_per_s": (ok + skipped) / seconds,
                         "transactions": -(-(ok + skipped) // IMPORT_CHUNK) + 2,
                         "peak_python_mb": peak / 2**20})
    return {"import_chunk": IMPORT_CHUNK, "sort_run": SORT_RUN, "flat": flat, "runs": runs,
            "load_average": os.getloadavg()[0]}


def report(f: dict) -> None:
    print(f"folder import (loop.project.import_folder: {f['import_chunk']:,} rows per transaction, "
          f"listings sorted in runs of {f['sort_run']:,}), tiny PNGs "
          + ("in one flat folder (an unlabeled project)" if f["flat"]
             else f"in {CLASSES} class folders"))
    print(f"{'files':>8}{'import s':>10}{'s / 10k files':>15}{'files/s':>10}{'transactions':>14}"
          f"{'peak MB':>9}")
    for r in f["runs"]:
        print(f"{r['files']:>8,}{r['import_s']:>10.2f}{r['s_per_10k_files']:>15.2f}"
              f"{r['files_per_s']:>10,.0f}{r['transactions']:>14}{r['peak_python_mb']:>9.1f}")
    print("peak MB: the most Python memory allocated at once during the import (tracemalloc); "
          f"load average at the end {f['load_average']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,40000", help="file counts, comma-separated")
    parser.add_argument("--flat", action="store_true", help="one flat folder (an unlabeled "
                        "project): past 50,000 files its listing is sorted in spilled runs")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    figures = measure([int(n) for n in args.sizes.split(",")], args.flat)
    report(figures)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
