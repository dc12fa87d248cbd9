import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from loop.evaluation import (accuracy, balanced_accuracy, decision_rules, evaluate,
                             expected_calibration_error, per_class_accuracy, risk_coverage)

Y = np.array([0, 0, 0, 1])
P = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])


def test_known_answers():
    assert accuracy(Y, P) == 0.75
    assert per_class_accuracy(Y, P, 3) == [2 / 3, 1.0, None]
    assert balanced_accuracy(Y, P, 3) == pytest.approx((2 / 3 + 1) / 2)
    rules = {r["rule"]: r for r in decision_rules(Y, P, thresholds=(0.75, 0.95))}
    assert rules["argmax"]["coverage"] == 1 and rules["argmax"]["errors_per_100"] == 25
    assert rules[">=0.75"]["coverage"] == 0.5 and rules[">=0.75"]["accuracy"] == 1.0
    assert rules[">=0.95"]["coverage"] == 0 and rules[">=0.95"]["accuracy"] is None


def test_ece_of_perfectly_calibrated_and_overconfident():
    y = np.array([0] * 8 + [1] * 2)
    calibrated = np.tile([0.8, 0.2], (10, 1))
    assert expected_calibration_error(y, calibrated) == pytest.approx(0.0)
    overconfident = np.tile([1.0, 0.0], (10, 1))
    assert expected_calibration_error(y, overconfident) == pytest.approx(0.2)


def test_evaluate_is_json_ready():
    import json
    summary = evaluate(Y, P, ["a", "b"])
    json.dumps(summary)
    assert summary["per_class"] == {"a": 2 / 3, "b": 1.0} and len(summary["rules"]) == 7


probabilities = arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(2, 5)),
                       elements=st.floats(0.01, 1))


@settings(max_examples=60, deadline=None)
@given(probabilities, st.integers(0, 1000))
def test_coverage_falls_as_threshold_rises(raw, seed):
    probs = raw / raw.sum(axis=1, keepdims=True)
    y = np.random.default_rng(seed).integers(0, probs.shape[1], len(probs))
    rules = decision_rules(y, probs)
    coverages = [r["coverage"] for r in rules]
    assert coverages[0] == 1.0 and coverages == sorted(coverages, reverse=True)
    assert 0 <= expected_calibration_error(y, probs) <= 1
    cov, risk = risk_coverage(y, probs)
    assert cov[-1] == 1 and risk[-1] == pytest.approx(1 - accuracy(y, probs))
