"""The query strategies on a pool of 100,000 embeddings: each on the whole pool and on a random
candidate subsample, time, peak memory, and how well the picks cover the pool.

    python bench/scale.py [--pool 100000] [--subsample 20000] [--n 10] [--json]

The pool is made from every real embedding in the local cache (data/cache/embeddings/<backbone>:
demo, Fashion-MNIST, MNIST images embedded by earlier runs), drawn with replacement to the pool
size with a small Gaussian jitter (5% of each dimension's spread) so that copies are distinct
points; the cluster structure is the real one. "coverage" is the mean distance (unit-normalized
embeddings) from every pool point to its nearest pick: lower covers the pool better. A strategy
over a subsample runs on `--subsample` candidates drawn at random from the pool.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loop.embeddings import EmbeddingCache
from loop.strategies import pick, unit_rows


def real_embeddings(cache_dir: Path, backbone: str) -> np.ndarray:
    return EmbeddingCache(cache_dir, backbone).all()


def coverage(points: np.ndarray, picks: np.ndarray, chunk: int = 20000) -> float:
    """Mean distance from each (unit) point to its nearest pick."""
    P = points[picks]
    out = []
    for i in range(0, len(points), chunk):
        block = points[i:i + chunk]
        d2 = (block * block).sum(1)[:, None] + (P * P).sum(1)[None] - 2 * block @ P.T
        out.append(np.sqrt(np.maximum(d2.min(1), 0)))
    return float(np.concatenate(out).mean())


def timed(fn):
    tracemalloc.start()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--subsample", type=int, default=20_000)
    parser.add_argument("--n", type=int, default=10, help="images per pick (a batch)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--data", default="data")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--strategies", default="margin,hybrid,kcenter,typiclust")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    real = real_embeddings(Path(args.data) / "cache" / "embeddings", args.backbone)
    if len(real) < 1000:
        print(f"only {len(real)} cached embeddings under {args.data}; run the tests or a benchmark first")
        return 2
    rng = np.random.default_rng(0)
    X = real[rng.integers(len(real), size=args.pool)]
    X = (X + 0.05 * X.std(0) * rng.normal(size=X.shape)).astype(np.float32)
    unit = unit_rows(X)
    # Probabilities as a head gives them: a softmax of a random linear map (only their ranking
    # matters to margin and hybrid).
    W = rng.normal(size=(X.shape[1], args.classes)).astype(np.float32) / np.sqrt(X.shape[1])
    logits = unit @ W * 20
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labeled = unit[rng.choice(len(X), args.classes, replace=False)]
    print(f"pool {len(X):,} x {X.shape[1]} ({X.nbytes / 2**20:.0f} MiB float32) from {len(real):,} "
          f"real cached embeddings; {args.n} per pick; subsample {args.subsample:,}")

    rows, figures = [], {}
    warm = {"probabilities": probs[:500], "embeddings": X[:500], "labeled": labeled, "n_classes": args.classes}
    for name in [s for s in args.strategies.split(",") if s]:   # imports and thread pools, untimed
        pick(name, args.n, np.random.default_rng(1), **warm)
    for name in [s for s in args.strategies.split(",") if s]:
        for where in ("whole pool", "subsample"):
            if where == "subsample":
                candidates = np.sort(rng.choice(len(X), min(args.subsample, len(X)), replace=False))
            else:
                candidates = np.arange(len(X))
            available = {"probabilities": probs[candidates], "embeddings": X[candidates],
                         "labeled": labeled, "n_classes": args.classes}
            try:
                picked, seconds, peak = timed(lambda name=name, available=available: pick(name, args.n, np.random.default_rng(1), **available))
            except MemoryError as exc:
                rows.append((name, where, float("nan"), float("nan"), float("nan")))
                print(f"{name} on the {where}: {exc}")
                continue
            cover = coverage(unit, candidates[picked])
            rows.append((name, where, seconds, peak, cover))
            figures.setdefault(name, {})["whole" if where == "whole pool" else "subsample"] = {
                "seconds": round(seconds, 3), "peak_mib": round(peak, 1), "coverage": round(cover, 4)}
            print(f"  {name:<10} {where:<11} {seconds:8.2f} s  peak {peak:8.0f} MiB  coverage {cover:.4f}",
                  file=sys.stderr)
    random_cover = np.mean([coverage(unit, rng.choice(len(X), args.n, replace=False)) for _ in range(5)])
    print(f"\n{'strategy':<11}{'candidates':<12}{'seconds':>9}{'peak MiB':>10}{'coverage':>10}")
    for name, where, seconds, peak, cover in rows:
        print(f"{name:<11}{where:<12}{seconds:>9.2f}{peak:>10.0f}{cover:>10.4f}")
    print(f"{'random':<11}{'whole pool':<12}{'':>9}{'':>10}{random_cover:>10.4f}  (mean of 5 random picks)")
    if args.json:
        print(json.dumps({"pool": len(X), "subsample": args.subsample, "n": args.n,
                          "random_coverage": round(float(random_cover), 4), **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
