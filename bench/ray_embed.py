"""Embedding throughput on Ray (loop.ray_embed) against the single-process path, in the same run.

The same JPEG photos (bench/embed.py's: scikit-image's sample photos, 640x480, varied crops) are
embedded twice into empty caches:

- local: `fill_cache` in this process (decode on threads while the model runs), the backbone
  loaded and warmed up beforehand (its load time is reported apart);
- ray: `embed_with_ray` on a local Ray instance with every core of this machine (or --address),
  started beforehand (its start time is reported apart). Its seconds include starting the actor
  pool (each actor imports Keras and builds the network), as every run pays it.

Each image count runs both engines (the larger count amortizes Ray's start-up: what a million
images would see). Both caches must hold the same vectors (the largest absolute difference is
printed).

    python bench/ray_embed.py [--images 768,3072] [--backbone NAME] [--actors N] [--address ADDR] [--json]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np


def measure(args) -> dict:
    from embed import cores, make_jpegs  # bench/embed.py

    from loop.embeddings import EmbeddingCache, fill_cache
    from loop.ray_embed import BLOCK_ROWS, actor_plan, embed_with_ray, ray_session
    from models.backbones import load_backbone
    from models.images import file_hash

    sizes = sorted(int(n) for n in args.images.split(","))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "photos").mkdir()
        every = [(file_hash(p), p) for p in make_jpegs(tmp / "photos", sizes[-1])]

        started = time.perf_counter()
        network = load_backbone(args.backbone)
        network.embed(np.zeros((32, network.image_size, network.image_size, 3), np.uint8))
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        with ray_session(args.address) as ray:
            ray_start_s = time.perf_counter() - started
            plan = actor_plan(ray.cluster_resources(), args.actors)
            for n in sizes:
                items, hashes = every[:n], [h for h, _ in every[:n]]
                local = EmbeddingCache(tmp / f"local-{n}", args.backbone)
                started = time.perf_counter()
                fill_cache(local, items, network.embed, network.image_size)
                local_s = time.perf_counter() - started
                arrivals: list[tuple[float, int]] = []
                remote = EmbeddingCache(tmp / f"ray-{n}", args.backbone)
                started = time.perf_counter()
                embed_with_ray(remote, items, args.backbone, actors=args.actors,
                               on_progress=lambda done, _, seen=arrivals: seen.append(
                                   (time.perf_counter(), done)))
                ray_s = time.perf_counter() - started
                (first_t, first_done), (last_t, last_done) = arrivals[0], arrivals[-1]
                runs.append({
                    "images": n, "local_s": local_s, "local_images_per_s": n / local_s,
                    "ray_s": ray_s, "ray_images_per_s": n / ray_s, "ratio": local_s / ray_s,
                    "ray_first_result_s": first_t - started,
                    "ray_after_first_images_per_s": ((last_done - first_done) / (last_t - first_t)
                                                     if last_t > first_t else None),
                    "max_abs_difference": float(np.abs(local.get(hashes)
                                                       - remote.get(hashes)).max())})
    marginal = {}
    if len(runs) > 1:   # start-up cancels out between the smallest and the largest count
        small, large = runs[0], runs[-1]
        marginal = {engine: (large["images"] - small["images"])
                    / (large[f"{engine}_s"] - small[f"{engine}_s"]) for engine in ("local", "ray")}
    return {"backbone": args.backbone, "cores": cores(), "block_rows": BLOCK_ROWS,
            "marginal_images_per_s": marginal,
            "actors": plan["actors"], "gpus_per_actor": plan["num_gpus"],
            "local_load_s": load_s, "ray_start_s": ray_start_s, "runs": runs,
            "load_average": os.getloadavg()[0]}


def report(f: dict) -> None:
    print(f"{f['backbone']}, JPEG photos 640x480, {f['cores']} cores; Ray: {f['actors']} backbone "
          f"actor(s), {f['gpus_per_actor']} GPU each, blocks of {f['block_rows']} images")
    print(f"{'images':>7}{'local s':>9}{'local img/s':>13}{'ray s':>8}{'ray img/s':>11}"
          f"{'ray/local':>11}{'ray 1st result s':>18}{'ray img/s after':>17}{'max |diff|':>12}")
    for r in f["runs"]:
        after = r["ray_after_first_images_per_s"]
        print(f"{r['images']:>7}{r['local_s']:>9.1f}{r['local_images_per_s']:>13.1f}"
              f"{r['ray_s']:>8.1f}{r['ray_images_per_s']:>11.1f}{r['ratio']:>11.2f}"
              f"{r['ray_first_result_s']:>18.1f}{after or float('nan'):>17.1f}"
              f"{r['max_abs_difference']:>12.2g}")
    if f["marginal_images_per_s"]:
        m = f["marginal_images_per_s"]
        print(f"Marginal rate between the smallest and largest count (start-up cancels): local "
              f"{m['local']:.1f} images/s, ray {m['ray']:.1f} ({m['ray'] / m['local']:.2f}x local).")
    print(f"Not in the seconds above: loading the local backbone {f['local_load_s']:.1f} s, "
          f"starting Ray {f['ray_start_s']:.1f} s. Ray's seconds include starting its actor pool "
          "(each actor imports Keras and builds the network) until the first result; decode tasks "
          "run ahead meanwhile, so the rate after the first result is an upper bound (model-bound). "
          f"Load average at the end {f['load_average']:.1f} (other processes share these cores).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default="768,3072", help="image counts, comma-separated")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--actors", type=int, help="backbone actors (default: loop.ray_embed's plan)")
    parser.add_argument("--address", help="a Ray cluster to use (default: a local instance)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    figures = measure(args)
    report(figures)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
