import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop.strategies import (STRATEGIES, entropy, hybrid, kcenter, kmeans, least_confidence, margin, pick,
                             typiclust)


def test_uncertainty_strategies_on_known_cases():
    p = np.array([[0.34, 0.33, 0.33], [0.9, 0.05, 0.05], [0.5, 0.45, 0.05], [0.6, 0.2, 0.2]])
    rng = np.random.default_rng(0)
    assert margin(p, 4, rng).tolist() == [0, 2, 3, 1]
    assert least_confidence(p, 4, rng).tolist() == [0, 2, 3, 1]
    assert entropy(p, 1, rng).tolist() == [0]


def blobs(rng, centers=4, per=30, dim=8):
    points = np.concatenate([rng.normal(0, 0.05, (per, dim)) + np.eye(dim)[c] * 3 for c in range(centers)])
    return points, np.repeat(np.arange(centers), per)


def test_kcenter_covers_unlabeled_clusters_first():
    rng = np.random.default_rng(0)
    points, cluster = blobs(rng)
    labeled = points[cluster == 0][:3]
    picked = kcenter(points, labeled, 3, rng)
    assert sorted(cluster[picked].tolist()) == [1, 2, 3]


def test_typiclust_takes_one_typical_image_per_cluster():
    rng = np.random.default_rng(1)
    points, cluster = blobs(rng)
    picked = typiclust(points, np.zeros((0, 8)), 4, rng)
    assert sorted(cluster[picked].tolist()) == [0, 1, 2, 3]
    # Typical: close to its cluster's centre, not an outlier.
    for i in picked:
        centre = points[cluster == cluster[i]].mean(0)
        spread = np.linalg.norm(points[cluster == cluster[i]] - centre, axis=1)
        assert np.linalg.norm(points[i] - centre) <= np.median(spread)


def test_hybrid_batch_is_diverse_not_near_copies():
    rng = np.random.default_rng(2)
    points, cluster = blobs(rng, centers=4, per=30)
    probs = np.full((len(points), 2), 0.5)            # everything equally uncertain
    picked = hybrid(probs, points, 4, rng)
    assert len(set(cluster[picked].tolist())) == 4


def test_hybrid_does_not_starve_a_class():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(100, 5))
    probs = np.tile([0.55, 0.45], (100, 1))
    probs[90:] = [0.3, 0.7]                           # a rare predicted class, less uncertain
    picked = hybrid(probs, points, 6, rng)
    assert np.sum(probs[picked].argmax(1) == 1) >= 3


def test_kmeans_recovers_blobs():
    rng = np.random.default_rng(4)
    points, cluster = blobs(rng)
    labels = kmeans(points, 4, rng)
    for c in range(4):
        assert len(set(labels[cluster == c].tolist())) == 1


def test_pick_passes_what_each_strategy_needs():
    rng = np.random.default_rng(5)
    points, _ = blobs(rng)
    probs = rng.dirichlet(np.ones(3), len(points))
    for name in STRATEGIES:
        picked = pick(name, 5, rng, probabilities=probs, embeddings=points, labeled=points[:2], n_classes=3)
        assert len(set(picked.tolist())) == 5
    with pytest.raises(ValueError, match="unknown strategy 'psychic'"):
        pick("psychic", 1, rng)
    with pytest.raises(ValueError, match="needs embeddings"):
        pick("kcenter", 1, rng, labeled=points[:1])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(0, 50), st.sampled_from(sorted(STRATEGIES)), st.integers(0, 99))
def test_strategies_return_distinct_valid_indices(n_rows, n, name, seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(4), n_rows)
    embeddings = rng.normal(size=(n_rows, 6))
    picked = pick(name, n, rng, probabilities=probs, embeddings=embeddings,
                  labeled=rng.normal(size=(3, 6)), n_classes=4)
    assert len(picked) == min(n, n_rows) and len(set(picked.tolist())) == len(picked)
    assert all(0 <= i < n_rows for i in picked)
