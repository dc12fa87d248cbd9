import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from loop.strategies import STRATEGIES, get_strategy, margin


def test_margin_prefers_the_closest_call():
    p = np.array([[0.34, 0.33, 0.33], [0.9, 0.05, 0.05], [0.5, 0.45, 0.05], [0.6, 0.2, 0.2]])
    assert margin(p, 4, np.random.default_rng(0)).tolist() == [0, 2, 3, 1]


def test_registry():
    assert {"random", "margin"} <= set(STRATEGIES)
    with pytest.raises(ValueError, match="unknown strategy 'psychic'"):
        get_strategy("psychic")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 50), st.integers(0, 60), st.sampled_from(sorted(STRATEGIES)), st.integers(0, 99))
def test_strategies_return_distinct_valid_indices(n_rows, n, name, seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(4), n_rows)
    picked = get_strategy(name)(p, n, rng)
    assert len(picked) == min(n, n_rows) and len(set(picked.tolist())) == len(picked)
    assert all(0 <= i < n_rows for i in picked)
