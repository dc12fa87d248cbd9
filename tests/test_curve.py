"""loop/curve.py and loop/gallery.py on small synthetic projects whose evaluations are written
straight into the store (no backbone, no training): human labels on the x axis and auto-accepted
ones apart, the forecast fitted on human labels only and to either metric, the answer about a
target within what the pool allows, the majority-class warning, and the gallery's version diff and
a lead's correction."""

from __future__ import annotations

import numpy as np
import pytest

from loop.curve import (
    baseline_warning,
    curve_figure,
    curve_rows,
    fitted_evaluations,
    forecast_curve,
    holdout_credit,
    human_labels,
    per_class_rows,
    read_curve,
    share,
    strategy_sentence,
    study_versus_live,
    target_answer,
)
from loop.evaluation import evaluate, majority_baseline
from loop.forecast import LabelsNeeded
from loop.gallery import compare, pending_truth, predictions, relabel, select
from loop.project import Paths, Project
from loop.settings import Settings
from loop.store import Store
from tests.conftest import SHARED_DATA

DEMO = SHARED_DATA / "datasets" / "demo-200"


def synthetic_project(root, points, classes=("Cat", "Dog"), holdout=(60, 40), pool=300,
                      name="synth", seed=0) -> Project:
    """A project of `pool` pool images and a hold-out set of `holdout[k]` images of class k, with
    one model version and evaluation per point (human labels, auto labels, accuracy): a version
    gets exactly round(accuracy * n) hold-out images right, the wrong ones spread over classes.
    Image paths name real demo PNGs so the gallery can draw them."""
    store = Store(Paths(root).database)
    pid = store.create_project(name, str(DEMO), Settings().to_json(), list(classes))
    class_ids = [c["id"] for c in store.classes(pid)]
    rows = [{"path": f"pool/{k:05d}.png", "hash": f"h{k}", "split": "pool", "status": "ok"}
            for k in range(pool)]
    truth = np.repeat(np.arange(len(classes)), holdout)
    for k, c in enumerate(truth):     # real demo pictures, so the gallery can draw them
        folder = classes[c] if (DEMO / classes[c]).is_dir() else "Cat"
        rows.append({"path": f"{folder}/{k:05d}.png", "hash": f"x{k}", "split": "holdout",
                     "known_class_id": class_ids[c], "status": "ok"})
    store.add_images(pid, rows)
    holdout_images = store.images(pid, split="holdout")
    store.add_labels(pid, [(i["id"], i["known_class_id"]) for i in holdout_images],
                     annotator="folder", source="imported")
    ids = np.array([i["id"] for i in holdout_images])
    y = np.array([class_ids.index(i["known_class_id"]) for i in holdout_images])
    rng = np.random.default_rng(seed)
    for version, (human, auto, acc) in enumerate(points, 1):
        right = np.zeros(len(y), bool)
        right[rng.permutation(len(y))[:round(acc * len(y))]] = True
        predicted = np.where(right, y, (y + 1 + rng.integers(0, len(classes) - 1, len(y))) % len(classes))
        probs = np.full((len(y), len(classes)), 0.2 / max(len(classes) - 1, 1), np.float32)
        probs[np.arange(len(y)), predicted] = 0.8
        row = store.add_model_version(pid, n_labels=human + auto, n_auto=auto, last_event_id=version,
                                      weights_path="")
        summary = evaluate(y, probs, list(classes))
        summary["n_labels"] = human + auto
        store.add_evaluation(pid, row["id"], summary, ids, [class_ids[c] for c in y], probs)
    return Project(store, name, Paths(root))


RISING = [(n, 0, a) for n, a in [(4, 0.55), (8, 0.62), (16, 0.7), (32, 0.76), (64, 0.8)]]


def test_human_labels_are_the_x_axis_and_auto_accepted_points_stay_out_of_the_fit(tmp_path):
    project = synthetic_project(tmp_path, RISING + [(64, 1100, 0.95)])
    rows = curve_rows(project)
    assert [r["labels"] for r in rows] == [4, 8, 16, 32, 64, 64]       # no jump to 1,164
    assert rows[-1]["auto_labels"] == 1100 and rows[-1]["trained_on"] == 1164
    data = read_curve(project)
    assert len(fitted_evaluations(data.evaluations)) == 5
    forecast = forecast_curve(project, n_boot=20, evaluations=data.evaluations)
    assert list(forecast.sizes_) == [4, 8, 16, 32, 64]
    assert human_labels(data.last) == 64 and data.remaining == 300 - 64


def test_balanced_accuracy_credit_averages_to_the_balanced_accuracy(tmp_path):
    project = synthetic_project(tmp_path, RISING, holdout=(80, 20))
    evaluations = project.store.evaluations(project.id)
    credit = holdout_credit(project.store, project.id, evaluations, "balanced_accuracy")
    assert np.allclose(np.nanmean(credit, 1), [e["balanced_accuracy"] for e in evaluations])
    plain = holdout_credit(project.store, project.id, evaluations, "accuracy")
    assert np.allclose(np.nanmean(plain, 1), [e["accuracy"] for e in evaluations])
    forecast = forecast_curve(project, n_boot=20, metric="balanced_accuracy")
    assert np.allclose(forecast.accuracy_, [e["balanced_accuracy"] for e in evaluations])
    with pytest.raises(ValueError, match="not one of"):
        forecast_curve(project, metric="f1")


class Flat:
    """A stand-in forecaster: the curve `value(n)`, band +-0.03, a labels-needed answer."""

    def __init__(self, value, needed):
        self.value, self.needed = value, needed

    def predict(self, n):
        mean = self.value(np.asarray(n, float))
        return mean, mean - 0.03, mean + 0.03

    def labels_needed(self, target):
        return self.needed

    def expected_crossing(self, target):
        return None


def test_a_target_beyond_the_pool_says_what_the_pool_allows():
    last = {"accuracy": 0.8, "balanced_accuracy": 0.78, "n_labels": 165, "n_auto": 0, "version": 7}
    forecast = Flat(lambda n: np.minimum(0.84, 0.7 + 0.02 * np.log(n)),
                    LabelsNeeded(0.9, 806_926.0, 2_266.0, None, 0.95))
    answer = target_answer(forecast, last, 0.9, pool_size=1690)
    assert answer.status == "beyond_pool" and answer.mark is None
    assert answer.sentence.startswith("Labeling all 1,525 remaining images is forecast to reach "
                                      "about 84% accuracy (80%: 81-87%); 90% would need more images "
                                      "than the project has")
    assert "806" not in answer.sentence


def test_a_target_met_is_said_from_the_measurement_not_the_forecast():
    last = {"accuracy": 0.922, "balanced_accuracy": 0.9, "n_labels": 165, "n_auto": 0, "version": 7}
    forecast = Flat(lambda n: 0.93 + 0 * n, LabelsNeeded(0.9, 100.0, 80.0, 140.0, 0.95))
    answer = target_answer(forecast, last, 0.9, pool_size=1690)
    assert answer.status == "met"
    assert answer.sentence == "Measured 92.2% accuracy at 165 labels; the target (90%) is met."
    balanced = target_answer(forecast, last, 0.91, 1690, metric="balanced_accuracy")
    assert balanced.status != "met" and "balanced accuracy" in balanced.sentence


def test_a_target_inside_the_pool_counts_more_labels_and_caps_the_interval_at_the_pool():
    last = {"accuracy": 0.8, "balanced_accuracy": 0.8, "n_labels": 100, "n_auto": 0, "version": 3}
    forecast = Flat(lambda n: 0.6 + 0.05 * np.log10(n), LabelsNeeded(0.9, 400.0, 250.0, None, 0.97))
    answer = target_answer(forecast, last, 0.9, pool_size=1000)
    assert answer.status == "in_pool" and answer.mark == 400.0
    assert answer.sentence.startswith("About 300 more labels (80% interval 150 to more than the 900 "
                                      "images left) to reach 90% accuracy")
    unreachable = target_answer(Flat(lambda n: 0.82 + 0 * n, LabelsNeeded(0.95, None, None, None, 0.83)),
                                last, 0.95, 1000)
    assert unreachable.status == "not_reachable" and "levels off at about 83%" in unreachable.sentence
    assert target_answer(None, last, 0.9, 1000).status == "no_forecast"


def test_a_real_forecast_never_answers_past_the_pool(tmp_path):
    project = synthetic_project(tmp_path, RISING, pool=120)
    forecast = forecast_curve(project, n_boot=20)
    for target in (0.7, 0.85, 0.95, 0.99):
        answer = target_answer(forecast, project.store.evaluations(project.id)[-1], target, 120)
        assert answer.mark is None or answer.mark <= 120, (target, answer)
        assert "1,000,000" not in answer.sentence


def test_a_model_no_better_than_the_majority_class_is_flagged():
    truth = np.array([0] * 1803 + [1] * 821)
    assert majority_baseline(truth) == (pytest.approx(1803 / 2624), 0)
    last = {"accuracy": 0.43, "balanced_accuracy": 0.49, "version": 1}
    warning = baseline_warning(last, truth, ["Cat", "Dog"])
    assert "no better than always answering 'Cat' (68.7%" in warning
    assert "balanced accuracy (49%) is no better than one class for everything (50%)" in warning
    assert baseline_warning({"accuracy": 0.9, "balanced_accuracy": 0.85, "version": 2}, truth,
                            ["Cat", "Dog"]) is None


def test_study_and_live_forecast_disagreeing_is_explained():
    study = LabelsNeeded(0.99, 3986.0, 2000.0, 9000.0, 0.995)
    live = LabelsNeeded(0.99, 21943.0, 9000.0, None, 0.995)
    why = study_versus_live(study, live, 0.99, labels_now=165)
    assert "about 3,821 more labels" in why and "about 21,778 more" in why and "random subsets" in why
    assert study_versus_live(study, LabelsNeeded(0.99, 4500.0, 2000.0, 9000.0, 0.995), 0.99) is None


def test_people_read_percentages():
    assert share(0.922) == "92.2%" and share(0.5) == "50%"
    text = strategy_sentence({"labels": 12, "seeds": 10, "strategy_accuracy": 0.81,
                              "control_accuracy": 0.74})
    assert "scores 81% on the hold-out set" in text and "scores 74%" in text
    assert "7 points ahead of random picks" in text
    rows = per_class_rows({"per_class": {"Cat": 0.9, "Dog": 0.456}}, np.array([0, 0, 1]), ["Cat", "Dog"])
    assert rows == [{"class": "Dog", "accuracy (%)": 45.6, "hold-out images": 1},
                    {"class": "Cat", "accuracy (%)": 90.0, "hold-out images": 2}]


def test_the_figure_draws_the_pool_end_and_no_mark_beyond_it(tmp_path):
    project = synthetic_project(tmp_path, RISING + [(64, 500, 0.9)], pool=200)
    data = read_curve(project)
    forecast = forecast_curve(project, n_boot=20, evaluations=data.evaluations)
    answer = target_answer(forecast, data.last, 0.99, data.pool_size)
    fig = curve_figure(data.evaluations, forecast, 0.99, data.pool_size, "accuracy", answer)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("auto-accepted" in t for t in legend) and not any("labels for" in t for t in legend)
    assert not any("read from" in t for t in legend)
    assert any("every pool image labeled (200)" in t.get_text() for t in ax.texts)
    assert ax.get_xlim()[1] > 200


def test_gallery_diff_names_fixed_and_broken_and_a_lead_correction_waits_for_the_next_evaluation(tmp_path):
    project = synthetic_project(tmp_path, [(4, 0, 0.5), (8, 0, 0.8)])
    first, second = (predictions(project, e) for e in project.store.evaluations(project.id))
    diff = compare(first, second)
    assert set(diff.fixed) == set(first.image_ids[~first.correct & second.correct].tolist())
    assert set(diff.broken) == set(first.image_ids[first.correct & ~second.correct].tolist())
    assert len(diff.fixed) + len(diff.broken) + len(diff.changed) + diff.unchanged == len(first.image_ids)
    assert diff.sentence().startswith(f"v2 against v1: {len(diff.fixed)} fixed, {len(diff.broken)} broken")
    rows = select(second)
    assert not second.correct[rows[0]] and second.correct[rows[-1]]     # wrong ones first
    image = int(second.image_ids[rows[0]])
    predicted = project.class_names[second.predicted[rows[0]]]
    message = relabel(project, image, predicted, lead="lead")
    assert "counts from the next evaluation" in message
    event = project.store.label_events(project.id, image)[-1]
    assert (event["source"], event["annotator"], event["origin"]) == ("review", "lead", "gallery")
    assert pending_truth(project, second) == {image: second.predicted[rows[0]]}
    assert predictions(project, project.store.evaluations(project.id)[-1]).truth.tolist() == \
        second.truth.tolist()                                          # nothing re-scored
    assert "nothing changed" in relabel(project, image, predicted, lead="lead")


@pytest.mark.parametrize("name", ["loop.curve", "loop.gallery"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0


def test_without_three_retrains_before_auto_accept_the_page_says_why_there_is_no_forecast(tmp_path):
    project = synthetic_project(tmp_path, [(10, 0, 0.5), (25, 0, 0.64), (40, 579, 0.71), (55, 813, 0.75)])
    data = read_curve(project)
    assert forecast_curve(project, n_boot=20, evaluations=data.evaluations) is None
    answer = target_answer(None, data.last, 0.9, data.pool_size, evaluations=data.evaluations)
    assert answer.status == "no_forecast"
    assert answer.sentence.startswith("Measured 75% accuracy at 55 labels (with 813 auto-accepted "
                                      "labels also in force)")
    assert "Auto-accepted labels have been in force since v3 (at 40 labels from people)" in answer.sentence
    fig = curve_figure(data.evaluations, None, 0.9, data.pool_size)
    assert len(fig.axes[0].lines) >= 2


@pytest.mark.parametrize("strategy, kind", [("random", "random"), ("auto", "strategy"), ("margin", "strategy")])
def test_the_forecast_takes_the_interval_learned_for_the_projects_kind_of_curve(tmp_path, monkeypatch,
                                                                                 strategy, kind):
    """A project picking at random forecasts with the interval learned on random picks' replays, one
    with a strategy with that of strategies' replays; the forecast itself is the same."""
    import dataclasses

    import loop.forecast as forecast_module

    project = synthetic_project(tmp_path, RISING)
    monkeypatch.setattr(project, "settings", dataclasses.replace(project.settings, strategy=strategy))
    shipped = forecast_module.DEFAULT_PRIORS
    monkeypatch.setattr(forecast_module, "DEFAULT_PRIORS",
                        dataclasses.replace(shipped, kind_scales=(), kind_scales_n0=()))
    plain = forecast_curve(project, n_boot=20)                        # LCDB's interval
    scales = (("random", (0.5, 0.5, 0.5, 0.5)), ("strategy", (0.8, 0.8, 0.8, 0.8)))
    monkeypatch.setattr(forecast_module, "DEFAULT_PRIORS",
                        dataclasses.replace(shipped, kind_scales=scales, kind_scales_n0=()))
    mine = forecast_curve(project, n_boot=20)
    factor = dict(scales)[kind][1]
    assert mine.priors.quantiles[1][1] == pytest.approx(plain.priors.quantiles[1][1] * factor)
    mean, low, high = mine.predict(256)
    plain_mean, plain_low, plain_high = plain.predict(256)
    assert mean == pytest.approx(plain_mean)
    assert high - low == pytest.approx((plain_high - plain_low) * factor, rel=0.05)
    # learned per starting point too: read at the project's labeled count so far (its largest)
    by_n0 = tuple((k, n0, (v,) * 4) for k in ("random", "strategy") for n0, v in ((16.0, 0.4), (1024.0, 1.6)))
    monkeypatch.setattr(forecast_module, "DEFAULT_PRIORS",
                        dataclasses.replace(shipped, kind_scales=scales, kind_scales_n0=by_n0))
    at_count = forecast_curve(project, n_boot=20)
    n = at_count.n_max_
    expected = 0.4 + (1.6 - 0.4) * (np.log2(n) - 4) / (10 - 4)
    assert at_count.priors.quantiles[1][1] == pytest.approx(plain.priors.quantiles[1][1] * expected)
