"""Query strategies: which unlabeled pool images to ask a person about next.

A strategy is a plain function `(probabilities, n, rng) -> indices` into the candidate rows,
most wanted first; adding one means writing the function and decorating it with `@strategy`.

>>> p = np.array([[0.5, 0.5], [0.99, 0.01], [0.6, 0.4]])
>>> margin(p, 2, np.random.default_rng(0)).tolist()
[0, 2]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Strategy = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
STRATEGIES: dict[str, Strategy] = {}


def strategy(fn: Strategy) -> Strategy:
    STRATEGIES[fn.__name__] = fn
    return fn


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy '{name}'; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


@strategy
def random(probabilities: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform picks: the baseline every other strategy must beat."""
    return rng.permutation(len(probabilities))[:n]


@strategy
def margin(probabilities: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Smallest gap between the two most likely classes first (ties broken at random)."""
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    order = np.lexsort((rng.random(len(gap)), gap))
    return order[:n]
