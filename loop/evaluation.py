"""Scoring a model on the hold-out set, and the decision rules a lead can compare: always take the
top class (argmax) versus auto-accept only above a confidence threshold. Pure numpy functions.

>>> y = np.array([0, 1, 1]); p = np.array([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2]])
>>> round(accuracy(y, p), 3)
0.667
>>> [round(r["coverage"], 3) for r in decision_rules(y, p, thresholds=(0.85,))]
[1.0, 0.333]
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == y)) if len(y) else float("nan")


def per_class_accuracy(y: np.ndarray, probs: np.ndarray, n_classes: int) -> list[float | None]:
    """Recall of each class on the hold-out set; None for a class with no hold-out image."""
    predicted = np.argmax(probs, axis=1)
    return [float(np.mean(predicted[y == c] == c)) if np.any(y == c) else None
            for c in range(n_classes)]


def balanced_accuracy(y: np.ndarray, probs: np.ndarray, n_classes: int) -> float:
    recalls = [r for r in per_class_accuracy(y, probs, n_classes) if r is not None]
    return float(np.mean(recalls)) if recalls else float("nan")


def majority_baseline(y: np.ndarray) -> tuple[float, int]:
    """(accuracy of always answering the most common class, that class): the bar a model must
    clear before its accuracy means anything on an unbalanced hold-out set.

    >>> majority_baseline(np.array([0, 1, 1, 1]))
    (0.75, 1)
    """
    if not len(y):
        return float("nan"), -1
    counts = np.bincount(np.asarray(y, dtype=int))
    return float(counts.max() / len(y)), int(counts.argmax())


def decision_rules(y: np.ndarray, probs: np.ndarray, thresholds=THRESHOLDS) -> list[dict]:
    """Per rule: the share of images it decides (coverage), accuracy on those, and the errors it
    lets through per 100 images auto-accepted. The first row is argmax (threshold 0)."""
    confidence = np.max(probs, axis=1)
    correct = np.argmax(probs, axis=1) == y
    rows = []
    for threshold in (0.0, *thresholds):
        covered = confidence >= threshold
        n = int(covered.sum())
        acc = float(correct[covered].mean()) if n else None
        rows.append({"rule": "argmax" if threshold == 0 else f">={threshold:g}",
                     "threshold": float(threshold),
                     "coverage": n / len(y) if len(y) else 0.0,
                     "accuracy": acc,
                     "errors_per_100": None if acc is None else 100 * (1 - acc),
                     "n_decided": n})
    return rows


def risk_coverage(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The whole risk-coverage curve: accepting the k most confident images, for every k."""
    order = np.argsort(-np.max(probs, axis=1), kind="stable")
    errors = np.cumsum(np.argmax(probs, axis=1)[order] != y[order])
    k = np.arange(1, len(y) + 1)
    return k / len(y), errors / k


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Mean |confidence - accuracy| over equal-width confidence bins, weighted by bin size."""
    if not len(y):
        return float("nan")
    confidence = np.max(probs, axis=1)
    correct = np.argmax(probs, axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(confidence[in_bin].mean() - correct[in_bin].mean())
    return float(ece)


def evaluate(y: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Everything stored with an evaluation, as JSON-ready values."""
    n_classes = len(class_names)
    return {
        "n_holdout": int(len(y)),
        "accuracy": accuracy(y, probs),
        "balanced_accuracy": balanced_accuracy(y, probs, n_classes),
        "per_class": dict(zip(class_names, per_class_accuracy(y, probs, n_classes))),
        "rules": decision_rules(y, probs),
        "ece": expected_calibration_error(y, probs),
    }

