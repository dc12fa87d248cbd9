"""A provisional learning-curve forecast: hold-out accuracy against labeled count, fitted with a
bounded inverse power law, acc(n) = c - a * n^-b with chance <= c <= 1, weighted by each
point's binomial hold-out noise, and an 80% interval from a parametric bootstrap.

Provisional: one family, points treated as independent, and not yet backtested on real curves
(that is the forecaster issue). The app labels it so.

>>> n = np.array([10, 20, 40, 80, 160]); acc = 0.9 - 0.8 * n ** -0.5
>>> f = PowerLawForecast(n_classes=10, holdout_size=100000).fit(n, acc)
>>> round(f.ceiling_, 2), int(round(f.labels_needed(0.85)[0]))
(0.9, 256)
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import curve_fit


def _power_law(n, c, a, b):
    return c - a * np.power(n, -b)


class PowerLawForecast:
    def __init__(self, n_classes: int, holdout_size: int, bootstrap: int = 100, seed: int = 0):
        self.n_classes = n_classes
        self.holdout_size = holdout_size
        self.bootstrap = bootstrap
        self.seed = seed

    def _fit_once(self, n: np.ndarray, acc: np.ndarray) -> np.ndarray | None:
        chance = 1 / self.n_classes
        p = np.clip(acc, 0.5 / self.holdout_size, 1 - 0.5 / self.holdout_size)
        sigma = np.sqrt(p * (1 - p) / self.holdout_size)
        start = (min(0.999, max(acc.max() + 0.02, chance + 0.01)), max(acc.max() - acc.min(), 0.05), 0.5)
        try:
            params, _ = curve_fit(_power_law, n, acc, p0=start, sigma=sigma, maxfev=5000,
                                  bounds=([chance, 0.0, 0.01], [1.0, 100.0, 3.0]))
        except (RuntimeError, ValueError):
            return None
        return params

    def fit(self, labels, accuracy) -> PowerLawForecast:
        n = np.asarray(labels, dtype=float)
        acc = np.asarray(accuracy, dtype=float)
        if len(n) < 3:
            raise ValueError(f"a forecast needs at least 3 points, got {len(n)}")
        params = self._fit_once(n, acc)
        if params is None:
            raise ValueError("the learning curve could not be fitted")
        self.params_ = params
        self.ceiling_ = float(params[0])
        rng = np.random.default_rng(self.seed)
        fitted = _power_law(n, *params)
        draws = []
        for _ in range(self.bootstrap):
            resampled = rng.binomial(self.holdout_size, np.clip(fitted, 0, 1)) / self.holdout_size
            p = self._fit_once(n, resampled)
            if p is not None:
                draws.append(p)
        self.draws_ = np.array(draws) if draws else params[None]
        return self

    def predict(self, n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(expected accuracy, 10th percentile, 90th percentile) at label counts `n`."""
        n = np.atleast_1d(np.asarray(n, dtype=float))
        curves = np.array([_power_law(n, *p) for p in self.draws_])
        return _power_law(n, *self.params_), np.quantile(curves, 0.1, axis=0), np.quantile(curves, 0.9, axis=0)

    def labels_needed(self, target: float) -> tuple[float | None, float | None, float | None]:
        """(labels, low, high) to reach `target`; None where the fitted ceiling is below it
        ("not reachable with this model")."""
        def needed(p):
            c, a, b = p
            if c <= target:
                return np.inf
            return float((a / (c - target)) ** (1 / b)) if a > 0 else 0.0
        point = needed(self.params_)
        spread = np.sort([needed(p) for p in self.draws_])   # may hold inf: nearest-rank quantiles
        low, high = spread[int(0.1 * (len(spread) - 1))], spread[int(np.ceil(0.9 * (len(spread) - 1)))]
        as_value = lambda v: None if not np.isfinite(v) else float(v)  # noqa: E731
        return as_value(point), as_value(low), as_value(high)
