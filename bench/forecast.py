"""Time to fit the learning-curve forecaster and read its answers (the app refits after every
retrain; the target is under 100 ms for 50 points), beside the provisional single power law with a
scipy bootstrap that it replaced, measured in the same run.

Cases: 50 points from a noisy curve (accuracies only; with per-image hold-out results for 1,000
images, resampled jointly; 10 sizes x 5 repeats, as a subsampling study gives).

    python bench/forecast.py [--repeats 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from loop.forecast import LearningCurveForecaster, PowerLawForecast  # noqa: E402

HOLDOUT = 1000
N_CLASSES = 10


def curve_points(rng: np.random.Generator, sizes: np.ndarray):
    """Accuracies and per-image hold-out results of nested models on one hold-out set."""
    truth = 0.92 - 0.7 * sizes ** -0.45
    difficulty = rng.uniform(size=HOLDOUT)          # an image is right once the model is good enough
    correct = (difficulty[None, :] < truth[:, None] + rng.normal(0, 0.02, (len(sizes), 1))).astype(float)
    return correct.mean(1), correct


def answers(forecaster) -> None:
    forecaster.predict(np.geomspace(10, 100_000, 200))
    forecaster.labels_needed(0.9)


def timed(make, repeats: int) -> np.ndarray:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        answers(make())
        times.append(time.perf_counter() - started)
    return np.array(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sizes = np.unique(np.geomspace(10, 5000, 50).round())
    sizes = np.r_[sizes, 5000 + np.arange(50 - len(sizes))] if len(sizes) < 50 else sizes
    accuracy, correct = curve_points(rng, sizes)
    study_sizes = np.repeat(np.geomspace(20, 2000, 10).round(), 5)
    study_accuracy = (0.92 - 0.7 * study_sizes ** -0.45) + rng.normal(0, 0.01, len(study_sizes))

    def forecaster():
        return LearningCurveForecaster(N_CLASSES, HOLDOUT)

    cases = {
        "forecaster_50_points": lambda: forecaster().fit(sizes, accuracy),
        "forecaster_50_points_per_image": lambda: forecaster().fit(sizes, accuracy, correct),
        "forecaster_10_sizes_x5_repeats": lambda: forecaster().fit(study_sizes, study_accuracy),
        "baseline_power_law_50_points": lambda: PowerLawForecast(N_CLASSES, HOLDOUT).fit(sizes, accuracy),
    }
    timed(cases["forecaster_50_points"], 3)                   # imports and first-call costs
    results = {}
    print(f"{'case':<34} {'p50 ms':>8} {'p95 ms':>8}")
    for name, make in cases.items():
        ms = timed(make, args.repeats)
        results[name] = {"p50_ms": round(float(np.median(ms)), 2),
                         "p95_ms": round(float(np.quantile(ms, 0.95)), 2)}
        print(f"{name:<34} {results[name]['p50_ms']:>8.1f} {results[name]['p95_ms']:>8.1f}")
    ratio = results["forecaster_50_points"]["p50_ms"] / results["baseline_power_law_50_points"]["p50_ms"]
    print(f"forecaster / provisional power law (p50, same run): {ratio:.2f}x; "
          f"{args.repeats} repeats; fit + predict on 200 sizes + labels needed")
    results["ratio_to_baseline"] = round(ratio, 3)
    results["fit_ms_50_points"] = results["forecaster_50_points"]["p95_ms"]
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
