"""The default strategy's learned choice (loop/choice.py): gains measured in context against random
picks, the batch given to the arm measured best, and random where every arm measures worse."""

import numpy as np
import pytest

from loop import choice
from loop.choice import Gain, allocation, arm_of, measure_gains


def test_arms_are_read_from_origins():
    assert arm_of("strategy:margin") == "margin" and arm_of("control") == "random"
    assert arm_of("strategy:random") == "random"
    assert arm_of(None) is None and arm_of("holdout") is None and arm_of("strategy:nonsense") is None
    assert arm_of("strategy") is None          # a fixed strategy's picks are no arm's


def test_the_batch_goes_to_the_arm_measured_best_and_to_random_when_all_are_worse():
    rng = np.random.default_rng(0)
    better = {"margin": Gain(0.03, 0.005, 40), "hybrid": Gain(0.01, 0.005, 40), "random": Gain(0, 0, 40)}
    shares = allocation(better, 9, rng)
    assert shares["margin"] == 8 and sum(shares.values()) == 9
    worse = {"margin": Gain(-0.03, 0.005, 40), "hybrid": Gain(-0.02, 0.005, 40),
             "typiclust": Gain(-0.015, 0.005, 40), "random": Gain(0, 0, 40)}
    assert allocation(worse, 9, rng)["random"] == 8
    # unmeasured arms tie at 0: the preference decides (TypiClust, the low-budget strategy, while
    # nothing is measured); a gain measured on noise counts for little
    assert allocation({}, 9, rng)["typiclust"] == 8
    assert allocation({}, 9, rng, arms=("margin", "hybrid", "random"))["hybrid"] == 8
    noisy = {"margin": Gain(0.05, 0.5, 6), "hybrid": Gain(0.006, 0.002, 60)}
    assert allocation(noisy, 9, rng)["hybrid"] == 8
    assert allocation(worse, 1, rng) == {"random": 1}


def test_the_evidence_to_leave_grows_with_the_arms_tested():
    """A lead of 2 standard errors is enough against one measured challenger (one-sided 95%), not
    when three were tested: the best of three arms as good as the current one leads by that much
    on noise alone far more often than one batch in twenty."""
    rng = np.random.default_rng(3)
    assert choice.leave_z(1) == pytest.approx(1.645, abs=1e-3)
    assert choice.leave_z(3) == pytest.approx(2.128, abs=1e-3)
    one = {"margin": Gain(0.02, 0.01, 40)}                      # hybrid current, 2 SE behind margin
    assert allocation(one, 10, rng, current="hybrid", explore=0) == {"margin": 10}
    three = {**one, "typiclust": Gain(0.0, 0.01, 40), "hybrid": Gain(0.0, 0.001, 40)}
    assert allocation(three, 10, rng, current="hybrid", explore=0) == {"hybrid": 10}
    assert allocation(three, 10, rng, current="hybrid", explore=0, z=1.645) == {"margin": 10}
    # the correction, simulated: two arms exactly as good as the current one (and random),
    # measured with noise; the batch leaves on noise alone in at most 5% of draws, against
    # about 10% (1 - 0.95^2) with each tested at 95% alone
    draws = np.random.default_rng(4)
    measured = [{a: Gain(float(draws.normal(0, 0.01)), 0.01, 40) for a in ("margin", "typiclust")}
                | {"hybrid": Gain(0.0, 1e-9, 40)} for _ in range(4000)]

    def left(z=None):
        return np.mean([allocation(g, 10, rng, current="hybrid", explore=0, z=z) != {"hybrid": 10}
                        for g in measured])

    assert left() <= 0.05
    assert left(z=1.645) > 0.08


def _blobs(rng, n, centers, noise=0.6):
    y = rng.integers(0, len(centers), n)
    return centers[y] + noise * rng.normal(size=(n, centers.shape[1])), y


def test_gains_measure_useful_labels_above_random_and_useless_ones_below():
    """In context: labels that carry information (correct, spread over the classes) measure above
    random picks; labels that are wrong measure below them."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 16)) * 2
    X_seed, y_seed = _blobs(rng, 4, centers)
    X_rand, y_rand = _blobs(rng, 40, centers)
    X_good, y_good = _blobs(rng, 40, centers)
    X_bad, y_bad = _blobs(rng, 40, centers)
    y_bad = (y_bad + 1) % 4                     # a labeler who is always wrong
    holdout = _blobs(rng, 400, centers)
    X = np.r_[X_seed, X_rand, X_good, X_bad]
    y = np.r_[y_seed, y_rand, y_good, y_bad]
    arms = np.array([None] * 4 + ["random"] * 40 + ["margin"] * 40 + ["hybrid"] * 40, dtype=object)
    gains = measure_gains(X, y, arms, holdout, 4, rng)
    assert gains["hybrid"].mean < -2 * gains["hybrid"].se      # wrong labels: worth less than random
    assert abs(gains["margin"].mean) < 3 * gains["margin"].se + 0.01   # as good as random
    assert gains["random"] == Gain(0.0, 0.0, 40)
    assert "typiclust" not in gains                             # no labels: not measured


def test_too_few_random_labels_measure_nothing():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20, 8))
    y = np.arange(20) % 2
    arms = np.array(["margin"] * 17 + ["random"] * 3, dtype=object)
    assert measure_gains(X, y, arms, (X, y), 2, rng) == {"random": Gain(0.0, 0.0, 3)}


@pytest.mark.parametrize("strategy", ["auto", "margin"])
def test_the_queue_tags_each_pick_with_its_arm(demo_project, strategy, monkeypatch):
    """The default's picks carry the arm that made them (so their gain can be measured later); a
    fixed strategy's are plain "strategy" picks; the control slice stays random."""
    import dataclasses

    from loop.queue import next_queries

    project = demo_project
    monkeypatch.setattr(project, "settings", dataclasses.replace(project.settings, strategy=strategy))
    queries = next_queries(project, 40, rng=np.random.default_rng(0))
    origins = {q.origin for q in queries if q.split == "pool"}
    assert "control" in origins or len(queries) == 40
    if strategy == "auto":
        assert origins - {"control"} <= {choice.PREFIX + a for a in choice.ARMS} and origins - {"control"}
    else:
        assert origins - {"control"} == {"strategy"}
    assert len({q.image_id for q in queries}) == len(queries)


def test_the_current_arm_keeps_the_batch_until_another_leads_beyond_its_noise():
    """The batch stays with the current arm (TypiClust below 3 labels per class, hybrid after)
    while the others' gains are within noise of it; a clear lead takes it, and random takes it
    once the current arm measures worse than random beyond its noise."""
    from loop.choice import incumbent, lead

    rng = np.random.default_rng(3)
    assert incumbent(29, 10) == "typiclust" and incumbent(30, 10) == "hybrid"
    assert incumbent(30, 10, ("typiclust", "random")) == "typiclust"
    close = {"hybrid": Gain(0.01, 0.01, 30), "margin": Gain(0.025, 0.01, 30), "random": Gain(0, 0, 30)}
    assert lead(close, "margin", "hybrid") < 1.645
    assert allocation(close, 10, rng, current="hybrid")["hybrid"] == 9       # a lead within noise
    clear = {**close, "margin": Gain(0.06, 0.01, 30)}
    assert allocation(clear, 10, rng, current="hybrid")["margin"] == 9
    slipping = {"hybrid": Gain(-0.01, 0.008, 30)}
    assert allocation(slipping, 10, rng, current="hybrid")["hybrid"] == 9    # worse, within noise
    falling = {"hybrid": Gain(-0.03, 0.008, 30)}
    assert allocation(falling, 10, rng, current="hybrid")["random"] == 9
    assert lead({}, "margin", "hybrid") == -np.inf          # unmeasured: leads nothing
    assert allocation({}, 10, rng, current="hybrid")["hybrid"] == 9
