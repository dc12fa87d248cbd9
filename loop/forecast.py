"""Learning-curve forecasts: hold-out accuracy against labeled count, extrapolated by several bounded
curve families combined by how well each predicted later points on real curves (LCDB), with an 80%
interval from a bootstrap over points and hold-out images, calibrated on held-apart datasets.

>>> n = np.array([16, 23, 32, 45, 64, 91, 128]); acc = 0.95 - 0.6 * n ** -0.5
>>> f = LearningCurveForecaster(n_classes=10, holdout_size=5000).fit(n, acc)
>>> mean, low, high = f.predict(512)
>>> bool(low < 0.95 - 0.6 * 512 ** -0.5 < high), bool(abs(mean - (0.95 - 0.6 * 512 ** -0.5)) < 0.02)
(True, True)
>>> labels, low, high = f.labels_needed(0.93)      # truly 900: 0.95 - 0.6 / sqrt(900) = 0.93
>>> bool(low < 900 < high), bool(low < labels < high)
(True, True)
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FAR = 1_000_000          # labels: a target first reached beyond this counts as not reachable
GRID_POINTS = 480        # log-spaced label counts from 1 to FAR on which curves are tabulated
Z80 = 1.2815515655446004  # the 90th percentile of the standard normal


# -- curve families: y = c - a * phi(n), a >= 0, chance <= c <= 1 (c is the ceiling) ---------------

# The grids of the nonlinear parameters (scales relative to the largest labeled count).
EXPONENTS = np.geomspace(0.02, 2.0, 40)[:, None]
EXP_SCALES = np.geomspace(1 / 32, 32, 32)[:, None]
SHAPE_SCALES, SHAPE_POWERS = (g.ravel()[:, None] for g in np.meshgrid(np.geomspace(1 / 256, 32, 16),
                                                                     np.geomspace(0.2, 3.0, 10)))


def _pow3(n: np.ndarray, n_ref: float) -> np.ndarray:
    return n[None, :] ** -EXPONENTS


_pow2 = _pow3


def _exp3(n: np.ndarray, n_ref: float) -> np.ndarray:
    return np.exp(-n[None, :] / (n_ref * EXP_SCALES))


def _ilog2(n: np.ndarray, n_ref: float) -> np.ndarray:
    return 1 / np.log(n[None, :] + 1)


def _mmf4(n: np.ndarray, n_ref: float) -> np.ndarray:
    return 1 / (1 + (n[None, :] / (n_ref * SHAPE_SCALES)) ** SHAPE_POWERS)


def _wbl4(n: np.ndarray, n_ref: float) -> np.ndarray:
    return np.exp(-(n[None, :] / (n_ref * SHAPE_SCALES)) ** SHAPE_POWERS)


def _log(n: np.ndarray, n_ref: float) -> np.ndarray:
    return -np.log(n[None, :])


# name -> (basis, ceiling, temperature). A basis maps label counts n (m,) to phi (grid, m), its
# scale set by the largest labeled count n_ref: the nonlinear parameters sit on a fixed grid, so a
# fit is a few matrix products for every replicate at once (fast, free of local minima). The
# ceiling c is fitted between chance and 1 ("fit"), fixed at 1 ("one": errors vanish with data) or
# absent ("none": `log` is only clipped at 1). Temperature None takes the best grid row; a number
# averages the rows' curves weighted by exp(-(SSE - SSE_min) / (2 T s^2)), s^2 the best row's
# residual variance: a posterior over the grid (uniform prior, T widening it for residuals that
# are not independent), which tames the extrapolations of the 4-parameter families (on LCDB,
# fitted to 128 labels and scored at 512: MMF 6.5 -> 4.4 points, Weibull 6.7 -> 4.5, exponential
# 6.3 -> 4.5 mean absolute error).
SOFT = 4.0
FAMILIES: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], str, float | None]] = {
    "pow3": (_pow3, "fit", None),     # c - a n^-b: inverse power law
    "pow2": (_pow2, "one", None),     # 1 - a n^-b: error rate falling as a power law
    "exp3": (_exp3, "fit", None),     # c - a exp(-n / s)
    "ilog2": (_ilog2, "fit", None),   # c - a / log(n + 1)
    "mmf4": (_mmf4, "fit", None),     # c - a / (1 + (n / s)^d): Morgan-Mercer-Flodin
    "wbl4": (_wbl4, "fit", None),     # c - a exp(-(n / s)^d): Weibull
    "log": (_log, "none", None),      # c + a log n
    "pow3_avg": (_pow3, "fit", SOFT),  # the same families, averaged over their grids
    "pow2_avg": (_pow2, "one", SOFT),
    "exp3_avg": (_exp3, "fit", SOFT),
    "mmf4_avg": (_mmf4, "fit", SOFT),
    "wbl4_avg": (_wbl4, "fit", SOFT),
}
CEILING_BOUNDS = {"fit": lambda chance: (chance, 1.0), "one": lambda chance: (1.0, 1.0),
                  "none": lambda chance: (-np.inf, np.inf)}


def fit_family(phi: np.ndarray, Y: np.ndarray, W: np.ndarray, low: float, high: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of y = c - a * phi_g(n) with a >= 0 and low <= c <= high, for every
    row of Y (replicates, m) with weights W (replicates, m), over every grid row g of phi (G, m).
    Returns per replicate the best (c, a, g).

    >>> n = np.array([10., 20, 40, 80]); phi = n[None] ** -np.array([[0.3], [0.5], [0.7]])
    >>> c, a, g = fit_family(phi, (0.9 - 0.5 * n ** -0.5)[None], np.ones((1, 4)), 0.1, 1.0)
    >>> round(float(c[0]), 6), round(float(a[0]), 6), int(g[0])
    (0.9, 0.5, 1)
    """
    C, A, S = fit_family_rows(phi, Y, W, low, high)
    g = np.argmin(S, axis=1)
    rows = np.arange(len(g))
    return C[rows, g], A[rows, g], g


def fit_family_rows(phi: np.ndarray, Y: np.ndarray, W: np.ndarray, low: float, high: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fit_family's constrained fit for every grid row: (c, a, weighted SSE), each (replicates, G)."""
    X = -phi                                    # y = c + a x: a linear fit per grid row
    Sw = W.sum(1)[:, None]
    Sx, Sxx = W @ X.T, W @ (X * X).T
    WY = W * Y
    Sy, Syy, Sxy = WY.sum(1)[:, None], (WY * Y).sum(1)[:, None], WY @ X.T

    def sse(c, a):
        return Syy - 2 * c * Sy - 2 * a * Sxy + c * c * Sw + 2 * c * a * Sx + a * a * Sxx

    det = Sw * Sxx - Sx * Sx
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a_free = np.where(det > 1e-12 * Sw * Sxx, (Sw * Sxy - Sx * Sy) / det, -1.0)
        c_free = (Sy - a_free * Sx) / Sw
        inside = (a_free >= 0) & (c_free >= low) & (c_free <= high)
        best_c, best_a = np.where(inside, c_free, 0.0), np.where(inside, a_free, 0.0)
        best = np.where(inside, sse(c_free, a_free), np.inf)
        # Otherwise the optimum lies on an edge of the box: a = 0, c = low or c = high.
        edges = [(np.broadcast_to(np.clip(Sy / Sw, low, high), Sx.shape), np.zeros_like(Sx))]
        for bound in (low, high):
            if np.isfinite(bound):
                a_edge = np.where(Sxx > 0, np.clip((Sxy - bound * Sx) / Sxx, 0, None), 0.0)
                edges.append((np.full_like(a_edge, bound), a_edge))
        for c, a in edges:
            s = sse(c, a)
            better = s < best
            best, best_c, best_a = (np.where(better, s, best), np.where(better, c, best_c),
                                    np.where(better, a, best_a))
    return best_c, best_a, best


def grid_weights(S: np.ndarray, points: int, temperature: float | None) -> np.ndarray:
    """(replicates, G) weights of the grid rows: one-hot on the best row (temperature None) or the
    tempered posterior described at FAMILIES.

    >>> grid_weights(np.array([[3.0, 1.0, 2.0]]), 5, None).tolist()
    [[0.0, 1.0, 0.0]]
    >>> w = grid_weights(np.array([[3.0, 1.0, 2.0]]), 5, 1.0); bool(w[0, 1] > w[0, 2] > w[0, 0])
    True
    """
    best = S.min(1, keepdims=True)
    if temperature is None:
        out = np.zeros_like(S)
        out[np.arange(len(S)), S.argmin(1)] = 1.0
        return out
    variance = np.maximum(best / max(points - 3, 1), 1e-12)
    logits = -(S - best) / (2 * temperature * variance)
    weights = np.exp(logits)
    return weights / weights.sum(1, keepdims=True)


# -- priors learned from real curves --------------------------------------------------------------

@dataclass(frozen=True)
class Priors:
    """What the forecaster learned from real learning curves (see `learn_priors`).

    At a horizon of r times the largest labeled count seen, the forecast is the fitted level there
    plus a weighted sum of each family's predicted gain, `weights[i]` for `ratios[i]` (interpolated
    in log r; plain family mean inside the data). Its 80% interval is the forecast plus
    `quantiles[i]` times sqrt(bootstrap variance + `spread_floor[i]`^2), the floor standing for
    the extrapolation error a bootstrap cannot see.

    Conditional on the curve seen so far (issue 11; empty, the fixed mix above): the gain also
    moves with `extra_features` (names in CONDITIONAL_FEATURES: the slope over the last doubling
    of labels, the headroom left below 100%, chance, a constant), weighted `extra_weights[i]` at
    `ratios[i]` (any sign); and the interval's scale grows with the forecast gain and the
    families' disagreement about it: sqrt(bootstrap variance + floor^2 + (`spread_gain[i]` x
    gain)^2 + (`spread_disagreement[i]` x sd of the families' gains)^2), so it is narrow where
    a curve has flattened and wide where it still climbs.
    """

    ratios: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
    weights: tuple[tuple[float, ...], ...] = ((1 / len(FAMILIES),) * len(FAMILIES),) * 4
    spread_floor: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    quantiles: tuple[tuple[float, float], ...] = ((-Z80, Z80),) * 4
    train_noise: float = 0.02          # sd of training-set noise at the largest n (grows as 1/sqrt(n))
    holdout_correlation: float = 0.82  # share of the nested-model correlation between checkpoints
    learned_on: str = "nothing: uniform weights, a pure bootstrap interval"
    families: tuple[str, ...] = tuple(FAMILIES)
    # Labels needed are read off the forecast moved this far towards an error power law
    # 1 - a n^-b (`labels_family`: "pow2" or its grid average "pow2_avg"): a curve that shrinks
    # predicted gains is right on average about accuracy but late about when a target is crossed;
    # both are learned for the labels-needed score.
    labels_shift: float = 0.0
    labels_family: str = "pow2"
    extra_features: tuple[str, ...] = ()
    extra_weights: tuple[tuple[float, ...], ...] = ()
    spread_gain: tuple[float, ...] = ()
    spread_disagreement: tuple[float, ...] = ()
    # Per curve kind (`curve_kind`: the product's own curves, from random picks or from a
    # strategy's), how much wider (> 1) or narrower the 80% interval is made at each of `ratios`
    # so that it holds 80% of the truths on replays of the product's loop (learned on them by
    # `python -m loop backtest-forecast --source DIR --learn`); the forecast itself is unchanged.
    kind_scales: tuple[tuple[str, tuple[float, ...]], ...] = ()
    kinds_learned_on: str = ""
    # The same, learned per starting point: (kind, N0, scale per ratio), read for a curve whose
    # largest labeled count is n by interpolating in log n between the N0s learned (held at the
    # ends); a kind with none here takes `kind_scales`. A curve fitted from few labels climbs
    # further than the priors expect and needs a wider interval than one fitted from many.
    kind_scales_n0: tuple[tuple[str, float, tuple[float, ...]], ...] = ()

    def for_kind(self, kind: str | None, n0: float | None = None) -> Priors:
        """These priors with the interval of curve kind `kind` ("random" or "strategy", see
        `curve_kind`) for a curve whose largest labeled count is `n0`: the quantiles times the
        kind's scale per horizon (`kind_scales_n0` at `n0` where learned, else `kind_scales`);
        themselves where no scale was learned for it (LCDB's calibration).

        >>> p = Priors(kind_scales=(("random", (0.5, 0.5, 0.5, 0.5)),))
        >>> p.for_kind("random").quantiles[0] == (-Z80 / 2, Z80 / 2), p.for_kind("strategy") is p
        (True, True)
        >>> q = Priors(kind_scales_n0=(("random", 64, (1.0,) * 4), ("random", 256, (0.5,) * 4)))
        >>> [round(q.for_kind("random", n).quantiles[0][1] / Z80, 3) for n in (32, 64, 128, 256, 999)]
        [1.0, 1.0, 0.75, 0.5, 0.5]
        """
        by_n0 = sorted((n, scales) for k, n, scales in self.kind_scales_n0 if k == kind)
        if by_n0 and n0 is not None:
            x = np.log2([n for n, _ in by_n0])
            table = np.array([scales for _, scales in by_n0])
            at = np.log2(max(float(n0), 1.0))
            scales = tuple(float(np.interp(at, x, table[:, j])) for j in range(table.shape[1]))
        else:
            scales = dict(self.kind_scales).get(kind)
        if scales is None:
            return self
        quantiles = tuple((low * k, high * k) for (low, high), k in zip(self.quantiles, scales))
        return dataclasses.replace(self, quantiles=quantiles, kind_scales=(), kind_scales_n0=())

    def at(self, ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(family weights (len, F), spread floor, low quantile, high quantile) at horizon ratios."""
        x = np.log2(np.maximum(ratio, 1.0))
        knots = np.log2(np.r_[1.0, self.ratios])
        uniform = np.full(len(self.families), 1 / len(self.families))
        table = np.vstack([uniform, np.asarray(self.weights)])
        weights = np.stack([np.interp(x, knots, table[:, f]) for f in range(table.shape[1])], 1)
        # Inside the data the bootstrap alone is the interval (no extrapolation error to add); the
        # calibration grows in from the largest labeled count to the first horizon.
        floor = np.interp(x, knots, np.r_[0.0, self.spread_floor])
        q = np.vstack([[-Z80, Z80], np.asarray(self.quantiles)])
        return weights, floor, np.interp(x, knots, q[:, 0]), np.interp(x, knots, q[:, 1])

    def conditional_at(self, ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(weights of the extra features (len, E), spread_gain, spread_disagreement) at horizon
        ratios, each 0 at ratio 1 (inside the data) and zero throughout without them."""
        x = np.log2(np.maximum(ratio, 1.0))
        knots = np.log2(np.r_[1.0, self.ratios])
        zeros = np.zeros(len(self.ratios))
        table = (np.vstack([np.zeros(len(self.extra_features)), np.asarray(self.extra_weights)])
                 if self.extra_features else np.zeros((len(knots), 0)))
        extra = np.stack([np.interp(x, knots, table[:, e]) for e in range(table.shape[1])], 1
                         ) if table.shape[1] else np.zeros((len(x), 0))
        gain, disagreement = (np.interp(x, knots, np.r_[0.0, np.asarray(v) if len(v) else zeros])
                              for v in (self.spread_gain, self.spread_disagreement))
        return extra, gain, disagreement


def curve_kind(strategy: str | None) -> str:
    """The kind of a product curve from the strategy that picked its labels: "random" for random
    picks, "strategy" for any other (their curves climb faster early and flatten sooner).

    >>> curve_kind("random"), curve_kind("auto"), curve_kind("margin")
    ('random', 'strategy', 'strategy')
    """
    return "random" if strategy == "random" else "strategy"


# name -> value at horizon ratio r from the family mean at the largest labeled count (`level`)
# and at half of it (`half`), per replicate, and chance: what the conditional terms of Priors
# weigh. All are known when the forecast is made.
CONDITIONAL_FEATURES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]] = {
    # the gain over the last doubling of labels, carried on in log n: steep curves climb on
    "slope": lambda level, half, r, chance: (level - half) * np.log2(np.maximum(r, 1.0)),
    "headroom": lambda level, half, r, chance: 1.0 - level + 0.0 * r,
    "chance": lambda level, half, r, chance: np.full(np.broadcast(level, r).shape, chance),
    "one": lambda level, half, r, chance: np.ones(np.broadcast(level, r).shape),
}


def conditional_features(names: Sequence[str], level: np.ndarray, half: np.ndarray,
                         ratio: np.ndarray, chance: float) -> np.ndarray:
    """(replicates, len(ratio), len(names)) values of CONDITIONAL_FEATURES; level and half are
    (replicates, 1).

    >>> conditional_features(("slope", "headroom", "one"), np.array([[0.8]]), np.array([[0.7]]),
    ...                      np.array([1.0, 4.0]), 0.1).round(3).tolist()
    [[[0.0, 0.2, 1.0], [0.2, 0.2, 1.0]]]
    """
    unknown = [n for n in names if n not in CONDITIONAL_FEATURES]
    if unknown:
        raise ValueError(f"unknown conditional feature(s) {unknown}; known: {list(CONDITIONAL_FEATURES)}")
    r = np.asarray(ratio, dtype=float)[None, :]
    return np.stack([np.broadcast_to(CONDITIONAL_FEATURES[n](level, half, r, chance),
                                     (level.shape[0], r.shape[1])) for n in names], 2
                    ) if names else np.zeros((level.shape[0], r.shape[1], 0))


def stacking_weights(gains: np.ndarray, target: np.ndarray, free: int = 0) -> np.ndarray:
    """Non-negative family weights w minimising sum |target - gains @ w| (least absolute
    deviations, so a few wild curves do not steer it): gains (examples, families) are each family's
    predicted gain over the fitted level, target the gain that was measured. The last `free`
    columns (conditional features) get weights of any sign.

    >>> g = np.array([[1., 0.], [0., 1.], [1., 1.], [2., 1.]]); t = g @ np.array([0.25, 0.5])
    >>> np.round(stacking_weights(g, t), 3).tolist()
    [0.25, 0.5]
    """
    from scipy import sparse
    from scipy.optimize import linprog

    m, k = gains.shape
    eye = sparse.identity(m, format="csr")
    A = sparse.hstack([sparse.csr_matrix(gains), eye, -eye], format="csr")
    cost = np.r_[np.zeros(k), np.ones(2 * m)]
    bounds = [(0, None)] * (k - free) + [(None, None)] * free + [(0, None)] * (2 * m)
    result = linprog(cost, A_eq=A, b_eq=target, bounds=bounds, method="highs")
    if not result.success:
        raise ValueError(f"stacking weights could not be fitted: {result.message}")
    return result.x[:k]


def _interval_score(center, scale, truth, chance, tail):
    """(interval score, low quantile, high quantile) of center + q * scale, q the empirical
    tail quantiles of the standardised errors."""
    ok = scale > 0
    z = (truth[ok] - center[ok]) / scale[ok]
    low, high = np.quantile(z, [tail, 1 - tail])
    lo = np.clip(center + low * scale, chance, 1)
    hi = np.clip(center + high * scale, chance, 1)
    score = np.mean(hi - lo + (np.maximum(lo - truth, 0) + np.maximum(truth - hi, 0)) / tail)
    return float(score), float(low), float(high)


def conditional_calibration(center: np.ndarray, spread: np.ndarray, truth: np.ndarray,
                            chance: np.ndarray, gain: np.ndarray, disagreement: np.ndarray,
                            coverage: float = 0.8) -> tuple[float, float, float, float, float]:
    """(spread floor, spread_gain, spread_disagreement, low quantile, high quantile) such that
    center + q * sqrt(spread^2 + floor^2 + (g gain)^2 + (d disagreement)^2) holds the central
    `coverage` of the truths, the three scale terms minimising the interval score (as in
    interval_calibration; Nelder-Mead from interval_calibration's floor, deterministic). Where
    the bootstrap spread is small beside the other terms, they and the quantiles are fixed only
    up to a common factor; the interval they give is what is fitted.

    >>> rng = np.random.default_rng(0); gain = rng.uniform(0, 0.1, 4000); e = rng.normal(0, 1, 4000)
    >>> floor, g, d, low, high = conditional_calibration(np.full(4000, 0.5), np.full(4000, 0.005),
    ...     0.5 + e * 0.5 * gain, np.zeros(4000), gain, np.zeros(4000))
    >>> bool(0.45 < g * high / Z80 < 0.55), bool(0.45 < -g * low / Z80 < 0.55), floor < 0.1 * g
    (True, True, True)
    """
    from scipy.optimize import minimize

    tail = (1 - coverage) / 2
    if not np.any(spread > 0):
        raise ValueError("interval calibration needs examples with a non-zero spread")
    start, _, _ = interval_calibration(center, spread, truth, chance, coverage)
    scale = lambda p: np.sqrt(spread ** 2 + p[0] ** 2 + (p[1] * gain) ** 2 + (p[2] * disagreement) ** 2)
    result = minimize(lambda p: _interval_score(center, scale(np.abs(p)), truth, chance, tail)[0],
                      np.array([start, 0.2, 0.2]), method="Nelder-Mead",
                      options={"maxiter": 600, "xatol": 1e-4, "fatol": 1e-7})
    p = np.abs(result.x)
    _, low, high = _interval_score(center, scale(p), truth, chance, tail)
    return float(p[0]), float(p[1]), float(p[2]), low, high


def interval_calibration(center: np.ndarray, spread: np.ndarray, truth: np.ndarray,
                         chance: np.ndarray, coverage: float = 0.8,
                         floors: np.ndarray | None = None) -> tuple[float, float, float]:
    """(spread floor, low quantile, high quantile) such that center + q * sqrt(spread^2 + floor^2)
    holds the central `coverage` of the truths. The floor minimises the interval score (width plus
    2 / (1 - coverage) times any miss), a proper score, so narrow intervals are not bought by
    giving up on hard cases. Split-conformal: check it on other data.

    >>> rng = np.random.default_rng(0); sd = rng.uniform(0.01, 0.05, 4000); e = rng.normal(0, 1, 4000)
    >>> floor, low, high = interval_calibration(np.full(4000, 0.5), sd, 0.5 + e * sd, np.zeros(4000))
    >>> floor <= 0.005, bool(-1.4 < low < -1.15 and 1.15 < high < 1.4)
    (True, True)
    """
    tail = (1 - coverage) / 2
    best = None
    for floor in np.linspace(0, 0.1, 41) if floors is None else floors:
        scale = np.sqrt(spread ** 2 + floor ** 2)
        if not (scale > 0).any():
            continue
        score, low, high = _interval_score(center, scale, truth, chance, tail)
        if best is None or score < best[0] - 1e-12:
            best = (score, float(floor), low, high)
    if best is None:
        raise ValueError("interval calibration needs examples with a non-zero spread")
    return best[1:]


PRIORS_FILE = Path(__file__).with_name("forecast_priors.json")


def load_priors(path: str | Path = PRIORS_FILE) -> Priors:
    """Priors saved by `save_priors`; uniform weights and a pure bootstrap interval without a file."""
    path = Path(path)
    if not path.exists():
        return Priors()
    try:
        data = json.loads(path.read_text())
        nested = lambda rows: tuple(tuple(float(v) for v in row) for row in rows)
        return Priors(ratios=tuple(map(float, data["ratios"])), weights=nested(data["weights"]),
                      spread_floor=tuple(map(float, data["spread_floor"])),
                      quantiles=nested(data["quantiles"]), train_noise=float(data["train_noise"]),
                      holdout_correlation=float(data["holdout_correlation"]),
                      learned_on=str(data["learned_on"]), families=tuple(data["families"]),
                      labels_shift=float(data["labels_shift"]),
                      labels_family=str(data.get("labels_family", "pow2")),
                      extra_features=tuple(map(str, data.get("extra_features", ()))),
                      extra_weights=nested(data.get("extra_weights", ())),
                      spread_gain=tuple(map(float, data.get("spread_gain", ()))),
                      spread_disagreement=tuple(map(float, data.get("spread_disagreement", ()))),
                      kind_scales=tuple((str(kind), tuple(map(float, scales)))
                                        for kind, scales in data.get("kind_scales", ())),
                      kind_scales_n0=tuple((str(kind), float(n0), tuple(map(float, scales)))
                                           for kind, n0, scales in data.get("kind_scales_n0", ())),
                      kinds_learned_on=str(data.get("kinds_learned_on", "")))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"'{path}' is not a priors file written by save_priors: {error}") from error


def save_priors(priors: Priors, path: str | Path = PRIORS_FILE) -> Path:
    path = Path(path)
    path.write_text(json.dumps(dataclasses.asdict(priors), indent=1) + "\n")
    return path


# Learned by `python -m loop backtest-forecast --source lcdb --learn` on every LCDB curve. The
# LCDB backtest never uses them: it learns priors on one half of the datasets to score the other.
DEFAULT_PRIORS = load_priors()


# -- the forecaster -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelsNeeded:
    """Labels needed to reach `target`: `labels` is None when the forecast never gets there by FAR
    labels ("not reachable with this model"; `ceiling` is where it levels off). `low`/`high` bound
    the 80% interval (`high` None: beyond FAR). Unpacks as (labels, low, high)."""

    target: float
    labels: float | None
    low: float | None
    high: float | None
    ceiling: float

    @property
    def reachable(self) -> bool:
        return self.labels is not None

    def __iter__(self):
        return iter((self.labels, self.low, self.high))

    def __str__(self) -> str:
        if not self.reachable:
            return (f"{self.target:.1%} is not reachable with this model: the forecast levels off "
                    f"at {self.ceiling:.1%}")
        count = lambda v: f"more than {FAR:,}" if v is None else f"{v:,.0f}"
        return (f"about {self.labels:,.0f} labels to reach {self.target:.1%} "
                f"(80% interval {count(self.low)} to {count(self.high)})")

    def more_than(self, labels_now: float) -> str:
        """The answer as a lead reads it, counted from the labels there are now.

        >>> print(LabelsNeeded(0.9, 1500.0, 900.0, None, 0.97).more_than(1000))
        about 500 more labels (80% interval 0 to more than 1,000,000) to reach 90%
        >>> print(LabelsNeeded(0.9, 800.0, 500.0, 1200.0, 0.97).more_than(1000))
        90% is reached already by the forecast
        """
        if not self.reachable:
            return str(self)
        if self.labels <= labels_now:
            return f"{self.target:.0%} is reached already by the forecast"
        more = lambda v: f"more than {FAR:,}" if v is None else f"{max(0.0, v - labels_now):,.0f}"
        return (f"about {more(self.labels)} more labels (80% interval {more(self.low)} to "
                f"{more(self.high)}) to reach {self.target:.0%}")


class LearningCurveForecaster:
    """Forecast hold-out accuracy at any labeled count from (labeled count, accuracy) points.

    `holdout_size` is the number of hold-out images (one number, or one per point). Points may
    repeat a labeled count (repeated runs, as in a subsampling study): their mean is fitted and
    their spread is the training-set noise. `fit(..., correct=)` takes per-image hold-out results
    (points x images, 1 right, 0 wrong, NaN not scored), resampled jointly across points.
    """

    def __init__(self, n_classes: int, holdout_size: int | Sequence[int], n_boot: int = 100,
                 priors: Priors = DEFAULT_PRIORS, seed: int = 0):
        self.n_classes = n_classes
        self.holdout_size = holdout_size
        self.n_boot = n_boot
        self.priors = priors
        self.seed = seed

    # -- fitting --------------------------------------------------------------------------------

    def fit(self, labels, accuracy, correct=None) -> LearningCurveForecaster:
        n, acc, holdout, correct = _check_points(labels, accuracy, self.holdout_size, self.n_classes,
                                                 correct)
        sizes, mean, spread, runs, holdout, correct = _pool_repeats(n, acc, holdout, correct)
        if len(sizes) < 3:
            raise ValueError(f"a forecast needs points at 3 or more distinct labeled counts, got "
                             f"{len(sizes)} ({', '.join(f'{s:g}' for s in sizes)})")
        priors, rng = self.priors, np.random.default_rng(self.seed)
        chance = 1 / self.n_classes
        n_max = sizes.max()
        p = np.clip(mean, 0.5 / holdout, 1 - 0.5 / holdout)
        holdout_var = p * (1 - p) / holdout
        repeated = runs >= 2
        train_var = np.where(repeated, spread / np.maximum(runs, 1),
                             priors.train_noise ** 2 * n_max / sizes)
        weights = 1 / (holdout_var + train_var)
        point = self._fit_all(sizes, n_max, mean[None], weights[None], chance)
        fitted = np.clip(np.mean([_curve(name, n_max, *point[name], sizes)[0]
                                  for name in priors.families], 0), chance, 1)
        holdout_noise = self._holdout_noise(fitted, mean, holdout, correct, rng)
        replicates = fitted + holdout_noise + _training_noise(mean - fitted, n, acc, sizes, runs, rng,
                                                              self.n_boot)
        # A later measurement on the same hold-out images shares their luck: about this much of a
        # replicate's hold-out shift at the last point carries over to it, so it is no uncertainty.
        self.shared_shift_ = priors.holdout_correlation * holdout_noise[:, np.argmax(sizes)]
        Y = np.vstack([mean, replicates])
        W = np.broadcast_to(weights, Y.shape)
        self.params_ = self._fit_all(sizes, n_max, Y, W, chance)
        self.sizes_, self.accuracy_, self.weights_ = sizes, mean, weights
        self.holdout_size_ = float(holdout[-1])
        self.chance_, self.n_max_ = chance, float(n_max)
        self._tabulate()
        return self

    def _fit_all(self, sizes, n_max, Y, W, chance) -> dict:
        out = {}
        for name in self.priors.families:
            basis, ceiling, temperature = FAMILIES[name]
            C, A, S = fit_family_rows(basis(sizes, n_max), Y, W, *CEILING_BOUNDS[ceiling](chance))
            weights = grid_weights(S, len(sizes), temperature)
            out[name] = ((weights * C).sum(1), weights * A)
        return out

    def _holdout_noise(self, fitted, observed, holdout, correct, rng) -> np.ndarray:
        """(n_boot, m) hold-out resampling noise, shared by all points (one hold-out set)."""
        if correct is not None:
            # Resample hold-out images jointly: every point sees the same resampled set.
            scored = ~np.isnan(correct)
            right = np.where(scored, correct, 0.0)
            counts = rng.multinomial(correct.shape[1], np.full(correct.shape[1], 1 / correct.shape[1]),
                                     size=self.n_boot).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                resampled = (counts @ right.T) / (counts @ scored.T)
            return np.nan_to_num(resampled - observed)
        # No per-image results: Gaussian with the binomial variance per point and the correlation
        # of nested models (a better model is right wherever a worse one was: min(p, q) - pq),
        # shrunk towards independence: the per-image results of 23 replays (demo, fashion-mnist,
        # mnist5k; random, margin, entropy) gave 0.72-0.87 of it, median 0.82, for checkpoints up
        # to 32x apart in labels.
        p = np.clip(fitted, 0.5 / holdout, 1 - 0.5 / holdout)
        nested = (np.minimum.outer(p, p) - np.outer(p, p)) / np.sqrt(np.outer(holdout, holdout))
        lam = self.priors.holdout_correlation
        cov = lam * nested + (1 - lam) * np.diag(np.diag(nested))
        root = np.linalg.cholesky(cov + 1e-12 * np.eye(len(p)))
        return rng.standard_normal((self.n_boot, len(p))) @ root.T

    def _tabulate(self) -> None:
        """Forecast and interval on a log grid of labeled counts (predict interpolates)."""
        grid = np.geomspace(1, FAR, GRID_POINTS)
        self.grid_ = grid
        curves = self.family_values(grid)                        # (replicates, F, grid)
        half, base = np.moveaxis(self.family_values(np.array([self.n_max_ / 2, self.n_max_])
                                                    ).mean(1, keepdims=True), 2, 0)  # (replicates, 1)
        ratio = grid / self.n_max_
        weights, floor, q_low, q_high = self.priors.at(ratio)
        gains = curves - base[:, :, None]
        center = base + np.einsum("rfg,gf->rg", gains, weights)
        extra, spread_gain, spread_disagreement = self.priors.conditional_at(ratio)
        if self.priors.extra_features:
            features = conditional_features(self.priors.extra_features, base, half, ratio,
                                            self.chance_)
            center = center + np.einsum("rge,ge->rg", features, extra)
        center = np.maximum.accumulate(np.clip(center, self.chance_, 1.0), axis=1)  # monotone in n
        # The interval is for the accuracy that will be measured on the same hold-out set: the
        # replicates' spread less the hold-out luck it shares with the points seen, plus what a
        # later measurement adds: its own hold-out noise (the part not shared) and one run's
        # training-set noise.
        self.boot_sd_ = ((center[1:] - self.shared_shift_[:, None]).std(0) if len(center) > 1
                         else np.zeros(len(grid)))
        lam = self.priors.holdout_correlation
        p = np.clip(center[0], 0.5 / self.holdout_size_, 1 - 0.5 / self.holdout_size_)
        self.noise_sd_ = np.sqrt((1 - lam ** 2) * p * (1 - p) / self.holdout_size_
                                 + self.priors.train_noise ** 2 * np.minimum(1, self.n_max_ / grid))
        # What the conditional interval scale grows with: the forecast gain over the fitted level
        # and the families' disagreement about the gain.
        self.gain_ = np.abs(center[0] - base[0])
        self.disagreement_ = gains[0].std(0)
        spread = np.sqrt(self.boot_sd_ ** 2 + self.noise_sd_ ** 2 + floor ** 2
                         + (spread_gain * self.gain_) ** 2
                         + (spread_disagreement * self.disagreement_) ** 2)
        self.center_ = center[0]
        self.low_ = np.clip(center[0] + q_low * spread, self.chance_, 1.0)
        self.high_ = np.clip(center[0] + q_high * spread, self.chance_, 1.0)
        family = self.priors.labels_family
        shift = self.priors.labels_shift * (curves[0, self.priors.families.index(family)] - center[0]
                                            if family in self.priors.families else 0.0)
        self.labels_center_, self.labels_low_, self.labels_high_ = (
            np.maximum.accumulate(np.clip(v + shift, self.chance_, 1.0))
            for v in (self.center_, self.low_, self.high_))
        self.ceiling_ = float(self.labels_center_[-1])

    def recalibrated(self, priors: Priors) -> LearningCurveForecaster:
        """A copy of this fitted forecaster that combines and calibrates with other `priors`
        (same families and noise model: the fit itself is reused, not redone)."""
        same_fit = (priors.families, priors.train_noise, priors.holdout_correlation) == (
            self.priors.families, self.priors.train_noise, self.priors.holdout_correlation)
        if not same_fit:
            raise ValueError("recalibrated() needs priors with the same families, train_noise and "
                             "holdout_correlation; fit a new forecaster instead")
        other = copy.copy(self)
        other.priors = priors
        other._tabulate()
        return other

    def family_values(self, n) -> np.ndarray:
        """Each family's fitted curve at `n`, for the fit (row 0) and every bootstrap replicate:
        (1 + n_boot, families, len(n)), clipped to [chance, 1]."""
        n = np.asarray(n, dtype=float)
        return np.stack([np.clip(_curve(name, self.n_max_, *self.params_[name], n), self.chance_, 1.0)
                         for name in self.priors.families], 1)

    # -- the estimator's answers ------------------------------------------------------------------

    def _at(self, n, values: np.ndarray):
        """`values` tabulated on the grid, interpolated in log n at labeled count(s) `n`."""
        out = np.interp(np.log(np.clip(np.asarray(n, dtype=float), 1, FAR)), np.log(self.grid_), values)
        return float(out) if np.ndim(n) == 0 else out

    def predict(self, n):
        """(expected accuracy, 10th percentile, 90th percentile) at labeled count(s) `n`."""
        return tuple(self._at(n, values) for values in (self.center_, self.low_, self.high_))

    def labels_curve(self, n):
        """The curve labels_needed reads (the forecast moved `priors.labels_shift` of the way to
        the error power law), at labeled count(s) `n`: draw it beside predict() so a chart's
        crossing agrees with the number said."""
        return self._at(n, self.labels_center_)

    def expected_crossing(self, target: float) -> float | None:
        """Labels at which the expected curve (predict's mean, not labels_needed's curve) first
        reaches `target`; None if it never does by FAR labels."""
        return _first_crossing(self.grid_, self.center_, target)

    def labels_needed(self, target: float) -> LabelsNeeded:
        """Labels at which the forecast first reaches `target` (a share, e.g. 0.9), with its 80%
        interval read off the band; not reachable when the forecast stays below it by FAR labels.
        The curve read is the forecast moved `priors.labels_shift` of the way towards the error
        power law (`labels_center_`), the shift that best predicted when real curves crossed
        targets."""
        if not 0 < target <= 1:
            raise ValueError(f"target accuracy must lie in (0, 1], got {target}")
        first = lambda values: _first_crossing(self.grid_, values, target)
        return LabelsNeeded(target=float(target), labels=first(self.labels_center_),
                            low=first(self.labels_high_), high=first(self.labels_low_),
                            ceiling=self.ceiling_)


def _curve(name, n_ref, c, a, n) -> np.ndarray:
    """A family's curves at n: c (replicates,) minus the grid rows' bases mixed by a (replicates, G)."""
    return c[:, None] - a @ FAMILIES[name][0](n, n_ref)


def _first_crossing(grid: np.ndarray, values: np.ndarray, target: float) -> float | None:
    above = np.flatnonzero(values >= target)
    if not len(above):
        return None
    i = above[0]
    if i == 0:
        return float(grid[0])
    lo, hi = values[i - 1], values[i]
    t = (target - lo) / (hi - lo) if hi > lo else 1.0
    return float(np.exp(np.log(grid[i - 1]) + t * (np.log(grid[i]) - np.log(grid[i - 1]))))


def _check_points(labels, accuracy, holdout_size, n_classes, correct):
    n = np.asarray(labels, dtype=float).ravel()
    acc = np.asarray(accuracy, dtype=float).ravel()
    if len(n) != len(acc):
        raise ValueError(f"labels and accuracy differ in length: {len(n)} and {len(acc)}")
    if not np.all(np.isfinite(n)) or np.any(n < 1):
        raise ValueError(f"labeled counts must be finite and at least 1, got {n[~(np.isfinite(n) & (n >= 1))][:5]}")
    if not np.all(np.isfinite(acc)) or np.any((acc < 0) | (acc > 1)):
        raise ValueError(f"accuracies must be shares in [0, 1], got {acc[~((acc >= 0) & (acc <= 1))][:5]}")
    if int(n_classes) < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    holdout = np.asarray(holdout_size, dtype=float)
    if holdout.ndim > 1 or (holdout.ndim == 1 and len(holdout) != len(n)):
        raise ValueError(f"holdout_size must be one number or one per point ({len(n)}), got "
                         f"{holdout.size} values")
    holdout = np.broadcast_to(holdout, n.shape).copy()
    if np.any(~np.isfinite(holdout) | (holdout < 1)):
        raise ValueError(f"holdout_size must be at least 1 image, got {holdout_size}")
    if correct is not None:
        correct = np.asarray(correct, dtype=float)
        if correct.ndim != 2 or len(correct) != len(n):
            raise ValueError(f"correct must be (points, hold-out images) = ({len(n)}, ...), got "
                             f"shape {correct.shape}")
    return n, acc, holdout, correct


def _pool_repeats(n, acc, holdout, correct):
    """Per distinct labeled count: mean accuracy, variance across runs, runs, mean hold-out size
    and mean per-image correctness."""
    sizes, index, runs = np.unique(n, return_inverse=True, return_counts=True)
    mean = np.bincount(index, acc) / runs
    spread = np.bincount(index, (acc - mean[index]) ** 2) / np.maximum(runs - 1, 1)
    holdout = np.bincount(index, holdout) / runs
    if correct is not None:
        pooled = np.full((len(sizes), correct.shape[1]), np.nan)
        for j in range(len(sizes)):
            with np.errstate(invalid="ignore"):
                rows = correct[index == j]
                seen = ~np.isnan(rows)
                pooled[j] = np.where(seen.any(0), np.nansum(rows, 0) / np.maximum(seen.sum(0), 1), np.nan)
        correct = pooled
    return sizes, mean, spread, runs, holdout, correct


def _training_noise(residual, n, acc, sizes, runs, rng, n_boot) -> np.ndarray:
    """(n_boot, m) bootstrap over points: runs resampled within each labeled count where there are
    repeats, the point's own residual with a random sign (wild bootstrap) where there is one."""
    out = residual[None, :] * rng.choice([-1.0, 1.0], size=(n_boot, len(sizes)))
    for j in np.flatnonzero(runs >= 2):
        values = acc[n == sizes[j]]
        out[:, j] = rng.choice(values, size=(n_boot, len(values))).mean(1) - values.mean()
    return out


# -- the provisional single-family forecast the app used first (now bench/forecast.py's baseline) --

def _curve_fit(*args, **kwargs):
    from scipy.optimize import curve_fit

    return curve_fit(*args, **kwargs)


def _power_law(n, c, a, b):
    return c - a * np.power(n, -b)


class PowerLawForecast:
    """The provisional forecast the app's curve page used before LearningCurveForecaster: one
    bounded inverse power law, points treated as independent, a parametric-bootstrap interval,
    not backtested. Kept as the speed baseline of bench/forecast.py.

    >>> n = np.array([10, 20, 40, 80, 160]); acc = 0.9 - 0.8 * n ** -0.5
    >>> f = PowerLawForecast(n_classes=10, holdout_size=100000).fit(n, acc)
    >>> round(f.ceiling_, 2), int(round(f.labels_needed(0.85)[0]))
    (0.9, 256)
    """

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
            params, _ = _curve_fit(_power_law, n, acc, p0=start, sigma=sigma, maxfev=5000,
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
        as_value = lambda v: None if not np.isfinite(v) else float(v)
        return as_value(point), as_value(low), as_value(high)
