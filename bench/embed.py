"""Embedding throughput on this machine: images/s for a batch-size sweep, end to end (JPEG files
decoded and resized on worker threads while the backbone runs) and for the backbone alone, with
the pure JPEG decode + resize rate beside it (the ceiling the CPU sets on the pipeline).

Images: JPEG photos (scikit-image's sample photos, 640x480, varied crops) written to a temp folder.

    python bench/embed.py [--images 256] [--batch-sizes 8,16,32,64] [--backbone NAME] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


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


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]

    from models.backbones import load_backbone
    from models.extract import decoded_in_order, embed_files
    from models.images import load_image

    backbone = load_backbone(args.backbone)
    size = backbone.image_size
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        started = time.perf_counter()
        for path in paths:
            load_image(path, size)
        decode_one = rate(len(paths), time.perf_counter() - started)
        started = time.perf_counter()
        decoded = [image for _, image, _ in decoded_in_order(paths, size)]
        decode_pool = rate(len(paths), time.perf_counter() - started)
        batch = np.stack(decoded)

        model, pipeline = {}, {}
        for bs in sizes:
            backbone.embed(batch[:bs])                       # warm-up: compile for this shape
            started = time.perf_counter()
            for i in range(0, len(batch), bs):
                backbone.embed(batch[i:i + bs])
            model[str(bs)] = rate(len(batch), time.perf_counter() - started)
            started = time.perf_counter()
            n = sum(len(b.indices) for b in embed_files(paths, backbone.embed, size, batch_size=bs))
            pipeline[str(bs)] = rate(n, time.perf_counter() - started)

    print(f"{backbone.name} at {size} px, {len(paths)} JPEG photos 640x480, {os.cpu_count()} CPUs")
    print(f"JPEG decode + resize alone: {decode_one:7.1f} img/s on one thread, "
          f"{decode_pool:7.1f} img/s on the worker pool")
    print(f"{'batch':>6} {'end to end':>11} {'model only':>11} {'pipeline/model':>15}")
    for bs in map(str, sizes):
        print(f"{bs:>6} {pipeline[bs]:11.1f} {model[bs]:11.1f} {pipeline[bs] / model[bs]:14.0%}")
    best = max(pipeline, key=pipeline.get)
    print(f"best batch size: {best} ({pipeline[best]:.1f} img/s end to end)")
    if args.json:
        print(json.dumps({"embed_images_per_s": pipeline, "model_images_per_s": model,
                          "decode_images_per_s": decode_one, "decode_pool_images_per_s": decode_pool,
                          "backbone": backbone.name, "images": len(paths)}))


if __name__ == "__main__":
    main()
