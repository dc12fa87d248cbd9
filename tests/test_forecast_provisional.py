import numpy as np
import pytest

from loop.forecast import PowerLawForecast


def test_recovers_a_known_curve_and_its_label_need():
    n = np.array([10, 20, 40, 80, 160, 320])
    acc = 0.95 - 0.9 * n ** -0.6
    forecast = PowerLawForecast(10, holdout_size=10**6).fit(n, acc)
    mean, low, high = forecast.predict([1000])
    assert mean[0] == pytest.approx(0.95 - 0.9 * 1000 ** -0.6, abs=0.002)
    assert low[0] <= mean[0] <= high[0]
    needed, low, high = forecast.labels_needed(0.9)
    assert needed == pytest.approx((0.9 / 0.05) ** (1 / 0.6), rel=0.05)


def test_bounded_and_not_reachable_said_plainly():
    n = np.array([10, 20, 40, 80])
    acc = np.array([0.40, 0.55, 0.62, 0.64])
    forecast = PowerLawForecast(10, holdout_size=400).fit(n, acc)
    mean, low, high = forecast.predict([10, 10**6])
    assert (0.1 <= low).all() and (high <= 1).all()
    assert forecast.labels_needed(0.99)[0] is None          # ceiling far below 99%
    with pytest.raises(ValueError, match="at least 3 points"):
        PowerLawForecast(10, 400).fit([10, 20], [0.5, 0.6])
