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


def test_spreading_over_the_unlabeled_pool_beats_one_label_per_class_alone():
    # Overlapping blobs, 1 random label per class, six draws: the labels spread over the
    # unlabeled pool find the clusters that four points alone miss (0.75 -> 0.90 when written).
    plain, spread = [], []
    for seed in range(6):
        X, y = blobs(n_per_class=150, n_classes=4, dim=16, seed=seed, spread=3.0)
        held = np.arange(len(y)) % 3 == 0
        pool = np.flatnonzero(~held)
        rng = np.random.default_rng(seed)
        labeled = np.array([rng.choice(pool[y[pool] == c]) for c in range(4)])
        unlabeled = X[np.setdiff1d(pool, labeled)]
        alone = SoftmaxHead(4, spread_neighbors=0).fit(X[labeled], y[labeled], unlabeled=unlabeled)
        head = SoftmaxHead(4).fit(X[labeled], y[labeled], unlabeled=unlabeled)
        assert alone.n_spread_ == 0 and head.n_spread_ > len(unlabeled) / 2
        plain.append(np.mean(alone.predict(X[held]) == y[held]))
        spread.append(np.mean(head.predict(X[held]) == y[held]))
    assert np.mean(spread) > np.mean(plain) + 0.08
    assert sum(s >= p for s, p in zip(spread, plain)) >= 5


def test_spreading_stops_once_labels_per_class_pass_spread_until():
    X, y = blobs(n_per_class=30)
    head = SoftmaxHead(3, spread_until=20)
    assert head.wants_unlabeled(y[::3]) and not head.wants_unlabeled(y)   # 10 vs 30 per class
    assert head.fit(X, y, unlabeled=X).n_spread_ == 0
    assert not SoftmaxHead(3, spread_neighbors=0).wants_unlabeled(y[:3])
    assert SoftmaxHead(3).fit(X[::10], y[::10]).n_spread_ == 0        # no pool given: nothing spread


def test_rows_of_weight_zero_are_never_drawn():
    y = np.array([0] * 10 + [1] * 10)
    weights = np.r_[np.zeros(5), np.ones(5), np.full(10, 0.5)]
    rows = balanced_batches(y, 100, 32, 2, np.random.default_rng(0), weights=weights)
    assert not np.isin(rows, np.arange(5)).any()
    np.testing.assert_allclose(np.mean(y[rows] == 0), 0.5, atol=0.05)   # classes still balanced


def test_prototype_blend_survives_save_and_load(tmp_path):
    X, y = blobs(n_per_class=2)
    head = SoftmaxHead(3, prototype_weight=2.0, spread_neighbors=0).fit(X, y)
    assert head.prototypes_.shape == (3, X.shape[1])
    loaded = SoftmaxHead.load(head.save(tmp_path / "p.npz"))
    np.testing.assert_allclose(loaded.predict_proba(X), head.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(head.predict_proba(X).sum(1), 1, rtol=1e-5)


def test_bad_spread_settings_and_weights_are_refused():
    with pytest.raises(ValueError, match="spread_alpha"):
        SoftmaxHead(3, spread_alpha=3)
    with pytest.raises(ValueError, match="prototype_temperature"):
        SoftmaxHead(3, prototype_temperature=0)
    X, y = blobs()
    with pytest.raises(ValueError, match="sample_weight"):
        SoftmaxHead(3).fit(X, y, sample_weight=-np.ones(len(y)))


def test_spreading_graph_is_scikit_learns_knn_graph():
    """Our k-nearest-neighbour graph (one matrix product) spreads exactly as LabelSpreading's
    own kernel="knn" does, on clustered unit vectors."""
    import warnings

    from sklearn.semi_supervised import LabelSpreading

    from models.heads import _unit, knn_graph

    rng = np.random.default_rng(3)
    centers = rng.normal(size=(4, 32))
    Z = _unit(np.repeat(centers, 50, axis=0) + rng.normal(scale=0.8, size=(200, 32))).astype(np.float32)
    labels = np.full(200, -1)
    labels[::25] = np.arange(200)[::25] // 50
    out = []
    for kernel in ("knn", lambda A, B: knn_graph(A, B, 7)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(LabelSpreading(kernel=kernel, n_neighbors=7, alpha=0.5, max_iter=30)
                       .fit(Z, labels).label_distributions_)
    np.testing.assert_allclose(out[0], out[1], atol=1e-12)
    assert (out[1].argmax(axis=1) == np.arange(200) // 50).mean() > 0.9
