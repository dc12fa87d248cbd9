import numpy as np
import pytest

from models.heads import SoftmaxHead, balanced_batches


def blobs(n_per_class=30, n_classes=3, dim=16, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = centers[y] + rng.normal(0, spread, (len(y), dim))
    return X.astype(np.float32), y


def test_fits_separable_classes_and_returns_probabilities():
    X, y = blobs()
    head = SoftmaxHead(3, cold_steps=100).fit(X, y)
    probs = head.predict_proba(X)
    assert probs.shape == (90, 3)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert (head.predict(X) == y).mean() > 0.95


def test_hidden_layer_and_dropout_variant():
    X, y = blobs(seed=1)
    head = SoftmaxHead(3, hidden_units=32, dropout=0.2, cold_steps=150).fit(X, y)
    assert (head.predict(X) == y).mean() > 0.9


def test_same_seed_same_model_whatever_ran_before():
    X, y = blobs(seed=2)
    first = SoftmaxHead(3, cold_steps=50, seed=7).fit(X, y).predict_proba(X)
    SoftmaxHead(3, cold_steps=50, seed=7).fit(X[:20], y[:20])   # an unrelated fit in between
    again = SoftmaxHead(3, cold_steps=50, seed=7).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(first, again, atol=1e-6)


def test_warm_start_continues_from_the_previous_version():
    X, y = blobs(seed=3, spread=2.0)
    cold = SoftmaxHead(3, cold_steps=200, warm_steps=5).fit(X, y)
    warm = SoftmaxHead(3, cold_steps=200, warm_steps=5).fit(X, y, warm_start=cold)
    fresh_short = SoftmaxHead(3, cold_steps=5).fit(X, y)
    def loss(h):
        return -np.mean(np.log(h.predict_proba(X)[np.arange(len(y)), y]))
    assert loss(warm) < loss(fresh_short)
    assert abs(loss(warm) - loss(cold)) < 0.1


def test_warm_start_from_an_incompatible_head_starts_cold():
    X, y = blobs()
    two = SoftmaxHead(2, cold_steps=10).fit(X[y < 2], y[y < 2])
    three = SoftmaxHead(3, cold_steps=100).fit(X, y, warm_start=two)
    assert (three.predict(X) == y).mean() > 0.9


def test_save_and_load_round_trip(tmp_path):
    X, y = blobs()
    head = SoftmaxHead(3, hidden_units=8, cold_steps=30).fit(X, y)
    path = head.save(tmp_path / "h.npz")
    loaded = SoftmaxHead.load(path)
    np.testing.assert_allclose(loaded.predict_proba(X), head.predict_proba(X), atol=1e-6)
    assert loaded.get_config() == head.get_config()


def test_one_label_per_class_is_enough_to_fit():
    X, y = blobs(n_per_class=1)
    assert (SoftmaxHead(3).fit(X, y).predict(X) == y).all()


def test_rare_classes_are_sampled_as_often_as_common_ones():
    y = np.array([0] * 500 + [1] * 5 + [2] * 50)
    rows = balanced_batches(y, 200, 64, 3, np.random.default_rng(0))
    share = np.bincount(y[rows.ravel()], minlength=3) / rows.size
    np.testing.assert_allclose(share, 1 / 3, atol=0.02)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2 classes"):
        SoftmaxHead(1)
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        SoftmaxHead(3).fit(np.zeros((2, 4), np.float32), np.array([0, 5]))
