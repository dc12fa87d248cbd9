"""Embedding throughput against the machine's ceiling, all measured in the same run.

- decode alone: JPEG decode + resize, one image after another on one thread: CPU-ms per image;
- model alone: the backbone on already decoded batches, per batch size: images/s and CPU-ms per
  image (the process's CPU time over all its threads, divided by the images);
- the ceiling they imply: cores x 1000 / (model CPU-ms + decode CPU-ms) images/s, taking the
  cheapest model batch size measured (the strictest ceiling): what the CPUs could do if not one
  cycle were lost to waiting;
- end to end (`models.extract.embed_files`, what filling the cache runs: decode on worker
  threads while the model runs), per batch size and per decode worker count, and as a share
  of the ceiling for the product's defaults;
- with --layouts, the same end-to-end run in fresh processes with TensorFlow's intra-op threads
  pinned (the model on its share of the cores, decode on the rest), to compare thread layouts.

Each figure is the median of --rounds rounds, the rounds interleaved so that a noisy neighbour
slows every configuration alike. Images: JPEG photos (scikit-image's sample photos, 640x480,
varied crops) written to a temp folder.

    python bench/embed.py [--images 256] [--batch-sizes 8,16,32,64] [--workers 1,2,3]
                          [--rounds 3] [--backbone NAME] [--layouts] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

# (TensorFlow intra-op threads, decode workers) tried by --layouts on top of the default layout.
LAYOUTS = ((1, 1), (1, 2), (2, 1), (2, 2))


def make_jpegs(folder: Path, count: int) -> list[Path]:
    import skimage.data
    from PIL import Image

    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(),
              skimage.data.rocket(), skimage.data.coffee()[::-1]]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        top, left = rng.integers(0, h // 4), rng.integers(0, w // 4)
        crop = Image.fromarray(photo[top:, left:]).resize((640, 480))
        path = folder / f"{i:05d}.jpg"
        crop.save(path, quality=90)
        paths.append(path)
    return paths


def cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                               # not Linux
        return os.cpu_count() or 1


def timed(work) -> tuple[float, float]:
    """(wall seconds, process CPU seconds over all threads) of work()."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def pin_intra_op_threads(threads: int) -> None:
    """Pin TensorFlow's intra-op thread pool (before the first op runs); other backends refuse."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit(f"--intra-op pins TensorFlow's threads; the backend is {keras.backend.backend()}")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1 if threads == 1 else 2)


def measure(args) -> dict:
    from models.backbones import load_backbone
    from models.extract import BATCH_SIZE, decoded_in_order, embed_files
    from models.images import load_image

    if args.intra_op:
        pin_intra_op_threads(args.intra_op)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")] if args.workers else []
    backbone = load_backbone(args.backbone)
    size = backbone.image_size
    runs: dict[str, list[float]] = {}

    def record(key: str, value: float) -> None:
        runs.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        n = len(paths)
        batch = np.stack([image for _, image, _ in decoded_in_order(paths, size)])
        for bs in sizes:                                 # warm-up: compile for each shape
            backbone.embed(batch[:bs])
        for _ in range(args.rounds):
            wall, cpu = timed(lambda: [load_image(p, size) for p in paths])
            record("decode_cpu_ms", 1000 * cpu / n)
            record("decode_rate", n / wall)
            wall, _ = timed(lambda: list(decoded_in_order(paths, size)))
            record("decode_pool_rate", n / wall)
            for bs in sizes:
                wall, cpu = timed(lambda: [backbone.embed(batch[i:i + bs]) for i in range(0, n, bs)])
                record(f"model_rate/{bs}", n / wall)
                record(f"model_cpu_ms/{bs}", 1000 * cpu / n)
                wall, _ = timed(lambda: list(embed_files(paths, backbone.embed, size, batch_size=bs)))
                record(f"e2e/{bs}", n / wall)
            for workers in worker_counts:
                wall, _ = timed(lambda: list(embed_files(paths, backbone.embed, size, workers=workers)))
                record(f"workers/{workers}", n / wall)

    med = {key: float(np.median(values)) for key, values in runs.items()}
    model_cpu = {bs: med[f"model_cpu_ms/{bs}"] for bs in sizes}
    cheapest = min(model_cpu, key=model_cpu.get)
    ceiling = cores() * 1000 / (model_cpu[cheapest] + med["decode_cpu_ms"])
    product = med.get(f"e2e/{BATCH_SIZE}")
    return {
        "backbone": backbone.name, "image_size": size, "images": n, "cores": cores(),
        "rounds": args.rounds, "intra_op": args.intra_op, "batch_size": BATCH_SIZE,
        "decode_cpu_ms": med["decode_cpu_ms"], "decode_images_per_s": med["decode_rate"],
        "decode_pool_images_per_s": med["decode_pool_rate"],
        "model_cpu_ms": model_cpu, "model_images_per_s": {bs: med[f"model_rate/{bs}"] for bs in sizes},
        "ceiling_images_per_s": ceiling, "ceiling_batch_size": cheapest,
        "embed_images_per_s": {bs: med[f"e2e/{bs}"] for bs in sizes},
        "workers_images_per_s": {w: med[f"workers/{w}"] for w in worker_counts},
        "share_of_ceiling": product / ceiling if product else None,
    }


def layouts(args) -> dict[str, float]:
    """End-to-end images/s at the product's batch size per (intra-op threads, decode workers),
    each in a fresh process (TensorFlow's thread pools are fixed once it starts)."""
    from models.extract import BATCH_SIZE

    out = {}
    for threads, workers in LAYOUTS:
        command = [sys.executable, __file__, "--images", str(args.images), "--batch-sizes",
                   str(BATCH_SIZE), "--workers", str(workers), "--rounds", str(args.rounds),
                   "--backbone", args.backbone, "--intra-op", str(threads), "--json"]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        out[f"{threads} model / {workers} decode"] = figures["workers_images_per_s"][str(workers)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--workers", default="1,2,3", help="decode worker counts to try end to end")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--intra-op", type=int, default=0,
                        help="pin TensorFlow's intra-op threads (0: TensorFlow's default)")
    parser.add_argument("--layouts", action="store_true",
                        help="also compare pinned thread layouts, each in a fresh process")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    f = measure(args)
    pinned = layouts(args) if args.layouts else {}
    pin = f" (model pinned to {f['intra_op']} intra-op threads)" if f["intra_op"] else ""
    print(f"{f['backbone']} at {f['image_size']} px, {f['images']} JPEG photos 640x480, "
          f"{f['cores']} cores{pin}, median of {f['rounds']} interleaved rounds")
    print(f"decode + resize alone, one thread: {f['decode_cpu_ms']:6.2f} CPU-ms/img "
          f"({f['decode_images_per_s']:.0f} img/s; {f['decode_pool_images_per_s']:.0f} img/s on the "
          f"worker pool)")
    print(f"{'batch':>6} {'model CPU-ms/img':>17} {'model img/s':>12} {'end to end img/s':>17} "
          f"{'share of ceiling':>17}")
    for bs, rate in f["embed_images_per_s"].items():
        mark = "  <- product default" if int(bs) == f["batch_size"] else ""
        print(f"{bs:>6} {f['model_cpu_ms'][bs]:17.2f} {f['model_images_per_s'][bs]:12.1f} "
              f"{rate:17.1f} {rate / f['ceiling_images_per_s']:16.0%}{mark}")
    print(f"ceiling: {f['cores']} cores x 1000 / ({f['model_cpu_ms'][f['ceiling_batch_size']]:.2f} "
          f"model + {f['decode_cpu_ms']:.2f} decode CPU-ms) = {f['ceiling_images_per_s']:.1f} img/s")
    for workers, rate in f["workers_images_per_s"].items():
        print(f"  {workers} decode worker(s), batch {f['batch_size']}: {rate:6.1f} img/s end to end "
              f"({rate / f['ceiling_images_per_s']:.0%} of the ceiling)")
    for layout, rate in pinned.items():
        print(f"  pinned {layout}, batch {f['batch_size']}: {rate:6.1f} img/s end to end "
              f"({rate / f['ceiling_images_per_s']:.0%} of the ceiling)")
    if f["share_of_ceiling"] is not None:
        print(f"product default (batch {f['batch_size']}, default threads): "
              f"{f['share_of_ceiling']:.0%} of the ceiling end to end")
    if args.json:
        print(json.dumps({**f, "layouts_images_per_s": pinned}))


if __name__ == "__main__":
    main()
