import json

import numpy as np
import pytest

from loop import autoaccept
from loop.autoaccept import (
    apply_temperature,
    audit_floor,
    audits_needed,
    clopper_pearson_lower,
    fit_temperature,
    round_size,
    threshold_for_precision,
    threshold_from_audits,
)
from loop.project import Paths, Project, create_project
from loop.queue import next_queries
from loop.settings import Settings
from loop.store import Store
from tests.test_project import small_folder


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.2).astype(int)
    calibrated = np.tile([0.8, 0.2], (3000, 1))
    assert fit_temperature(apply_temperature(calibrated, 0.5), y) == pytest.approx(2.0, rel=0.1)
    assert fit_temperature(calibrated, y) == pytest.approx(1.0, rel=0.1)


def test_threshold_meets_the_target_on_the_given_set():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3) * 0.5, 500)
    y = np.array([rng.choice(3, p=p) for p in probs])      # calibrated by construction
    t = threshold_for_precision(y, probs, 0.9)
    covered = probs.max(1) >= t
    assert (probs.argmax(1) == y)[covered].mean() >= 0.9
    lower = probs.max(1)[probs.max(1) < t]
    if len(lower):                                          # the lowest such threshold
        assert (probs.argmax(1) == y)[probs.max(1) >= lower.max()].mean() < 0.9
    assert threshold_for_precision(y, np.full((500, 3), 1 / 3), 0.99) is None


# -- the bound and the threshold: pure functions -----------------------------------------------

@pytest.mark.parametrize("k, n, confidence, expected", [
    (10, 10, 0.95, 0.05 ** (1 / 10)),      # n of n right: (1 - confidence) ** (1 / n)
    (59, 59, 0.95, 0.05 ** (1 / 59)),
    (7, 10, 0.975, 0.3475),                # the exact two-sided 95% interval of 7/10: [0.3475, 0.9333]
    (18, 20, 0.975, 0.6830),               # of 18/20: [0.6830, 0.9877]
    (95, 100, 0.95, 0.8977),
    (0, 5, 0.95, 0.0),
])
def test_clopper_pearson_lower_bound_has_known_values(k, n, confidence, expected):
    assert clopper_pearson_lower(k, n, confidence) == pytest.approx(expected, abs=1e-4)


def test_clopper_pearson_lower_bound_is_where_the_binomial_tail_is_five_percent():
    from scipy.stats import binom

    k, n = np.array([1, 12, 47, 190, 999]), np.array([3, 20, 50, 200, 1000])
    bounds = clopper_pearson_lower(k, n)
    assert binom.sf(k - 1, n, bounds) == pytest.approx(0.05, abs=1e-9)     # P(X >= k | p = bound)
    assert np.all(bounds < k / n)
    with pytest.raises(ValueError, match="successes must lie in"):
        clopper_pearson_lower(6, 5)


@pytest.mark.parametrize("promise", [0.8, 0.9, 0.95, 0.99])
def test_audits_needed_is_the_fewest_that_could_show_the_promise(promise):
    n = audits_needed(promise)
    assert clopper_pearson_lower(n, n) >= promise > clopper_pearson_lower(n - 1, n - 1)


def _lowest_reached_from_the_top(confidences, correct, promise, needed):
    """The rule spelled out one candidate at a time (what `threshold_from_audits` computes)."""
    chosen = None
    for t in sorted(set(confidences), reverse=True):
        above = confidences >= t
        if above.sum() < needed:
            continue
        if clopper_pearson_lower(correct[above].sum(), above.sum()) < promise:
            break
        chosen = t
    return chosen


def test_threshold_is_the_lowest_whose_bound_meets_the_promise_lowering_it_from_the_top():
    rng = np.random.default_rng(4)
    for _ in range(40):
        confidences = np.round(rng.uniform(0.8, 1, 150), 3)              # ties included
        correct = rng.random(150) < 1.4 * confidences - 0.4              # right less often lower down
        chosen = threshold_from_audits(confidences, correct, 0.9)
        assert chosen["threshold"] == _lowest_reached_from_the_top(confidences, correct, 0.9, 29)
        if chosen["threshold"] is None:
            continue
        above = confidences >= chosen["threshold"]
        assert (chosen["audited"], chosen["right"]) == (above.sum(), correct[above].sum())
        assert chosen["bound"] == pytest.approx(clopper_pearson_lower(correct[above].sum(), above.sum()))
        assert chosen["bound"] >= 0.9
        lower = confidences[confidences < chosen["threshold"]]
        if len(lower):                        # one step lower the bound falls short
            below = confidences >= lower.max()
            assert clopper_pearson_lower(correct[below].sum(), below.sum()) < 0.9


def test_too_few_audits_accept_nothing_and_say_how_many_are_needed():
    confidences, correct = np.linspace(0.99, 0.9, 28), np.ones(28, bool)   # all right, but 28 < 29
    chosen = threshold_from_audits(confidences, correct, 0.9)
    assert chosen == {"threshold": None, "bound": None, "audited": 28, "right": 28, "needed": 29}
    assert threshold_from_audits(confidences, correct, 0.9, min_audits=40)["threshold"] is None
    assert threshold_from_audits(np.r_[confidences, 0.89], np.r_[correct, True], 0.9)["threshold"] == 0.89
    words = autoaccept.describe_preview({
        "status": "reviewing", "target_precision": 0.9, "threshold": None, "bound": None,
        "audits_needed": 29, "audited": 28, "right": 28, "round_reviewed": 28, "round_size": 58,
        "model_version": 3, "latest_version": 3, "would_accept": 0, "would_audit": 0})
    assert "needs at least 29 audited images above a threshold: 28 so far" in words
    assert "it would label 0 pool image(s) now" in words


def test_simulated_runs_keep_the_promise_where_precision_falls_with_confidence():
    """Pools whose images are right less often the less sure the model is (and over-confident:
    right with probability 1 - 1.6 (1 - c)): over 200 runs, the images accepted by a threshold
    from one audit round are right at least as often as promised in at least 95% of runs. The
    point estimate (the lowest threshold whose audited precision merely reaches the promise, as
    the hold-out threshold did) breaks it in most runs."""
    rng, promise, runs = np.random.default_rng(11), 0.9, 200
    kept = kept_by_estimate = accepting = 0
    for _ in range(runs):
        confidences = 0.5 + 0.5 * rng.beta(6, 1.2, 5000)
        correct = rng.random(5000) < np.clip(1 - 1.6 * (1 - confidences), 0, 1)
        frame = np.flatnonzero(confidences >= audit_floor(promise))
        audited = rng.choice(frame, size=round_size(len(frame), promise, 0.1), replace=False)
        rest = np.ones(5000, bool)
        rest[audited] = False
        chosen = threshold_from_audits(confidences[audited], correct[audited], promise)
        if chosen["threshold"] is None:
            kept += 1                                         # nothing accepted: nothing promised
        else:
            accepting += 1
            kept += correct[rest & (confidences >= chosen["threshold"])].mean() >= promise
        estimate = min((t for t in confidences[audited]
                        if correct[audited][confidences[audited] >= t].mean() >= promise), default=None)
        kept_by_estimate += (estimate is None
                             or correct[rest & (confidences >= estimate)].mean() >= promise)
    assert kept >= 0.95 * runs
    assert accepting >= 0.4 * runs                            # and it does accept, often
    assert kept_by_estimate < 0.8 * runs


# -- auto-accept on a project: audit first, then accept --------------------------------------------

def audited_project(tmp_path, demo_project, shared_cache) -> Project:
    """240 demo images, 30% hold-out, 9 seeds and 15 more labels: model v2 is good enough
    that its audit at 80% passes."""
    paths = Paths(tmp_path / "data", cache_dir=shared_cache)
    root = small_folder(demo_project.root, tmp_path / "animals", per_class=80)
    project = create_project(Store(paths.database), "a", root, paths,
                             settings=Settings(seeds_per_class=3, holdout_fraction=0.3))
    truth = {i["id"]: i["known_class_id"] for i in project.store.images(project.id)}
    labels = project.store.current_labels(project.id)
    free = [i["id"] for i in project.store.images(project.id, split="pool") if i["id"] not in labels]
    more = free[::7][:15]
    project.store.add_labels(project.id, [(i, truth[i]) for i in more], "ben", "human")
    assert project.retrain()["version"] == 2
    return project


def answer(project: Project, image_ids) -> None:
    truth = {i["id"]: i["known_class_id"] for i in project.store.images(project.id)}
    project.store.add_labels(project.id, [(i, truth[i]) for i in image_ids], "ana", "human")


def test_auto_accept_audits_first_accepts_only_after_the_audit_and_undoes(tmp_path, demo_project,
                                                                         shared_cache):
    project = audited_project(tmp_path, demo_project, shared_cache)
    # First run: an audit round, nothing labeled.
    first = autoaccept.run(project, target_precision=0.8, audit_share=0.1, rng=np.random.default_rng(0))
    assert first["status"] == "no round" and first["accepted"] == 0 and first["audited"] == 28
    assert autoaccept.auto_accepted(project) == []
    rows = project.store.audits(project.id)
    holdout = {i["id"] for i in project.store.images(project.id, split="holdout")}
    assert len(rows) == 28 and not {r["image_id"] for r in rows} & holdout
    assert all(json.loads(r["plan"])["confidence"] >= audit_floor(0.8) for r in rows)
    queries = next_queries(project, 10)
    assert [q.origin for q in queries[:2]] == ["audit", "audit"] and queries[0].suggestion is None
    # Part of the round answered: still nothing, and it says what it waits for.
    answer(project, [r["image_id"] for r in rows[:20]])
    waiting = autoaccept.run(project, 0.8, 0.1, rng=np.random.default_rng(1))
    assert waiting["status"] == "reviewing" and waiting["accepted"] == waiting["audited"] == 0
    words = autoaccept.describe_preview(autoaccept.preview(project, 0.8, 0.1))
    assert "answered 20 of the 28 audit image(s)" in words
    assert "needs at least 14 audited images above a threshold: 20 so far" in words
    # All answered: the bound meets the promise, and the round's frame is labeled above it.
    answer(project, [r["image_id"] for r in rows[20:]])
    ready = autoaccept.preview(project, 0.8, 0.1)
    assert ready["status"] == "ready" and ready["bound"] >= 0.8 and ready["audited"] >= 14
    assert f"lower bound on precision {ready['bound']:.1%}" in autoaccept.describe_preview(ready)
    pool, probs, sure = autoaccept.candidates(project, ready)
    result = autoaccept.run(project, 0.8, 0.1, rng=np.random.default_rng(2))
    accepted = autoaccept.auto_accepted(project)
    assert len(accepted) == result["accepted"] == ready["would_accept"] == len(sure) > 0
    assert {e["image_id"] for e in accepted} == {pool[i]["id"] for i in sure}
    assert probs.max(1)[sure].min() >= result["threshold"] >= audit_floor(0.8)
    assert not {e["image_id"] for e in accepted} & (holdout | {r["image_id"] for r in rows})
    assert all(e["source"] == "auto" and e["annotator"] == "auto-v2" for e in accepted)
    # That round is spent: the next run accepts nothing more from it.
    again = autoaccept.run(project, 0.8, 0.1, rng=np.random.default_rng(3))
    assert again["accepted"] == 0
    now = autoaccept.state(project)
    assert now["audits"] == 28 + result["audited"] + again["audited"] and now["reviewed"] == 28
    assert 0 <= now["measured_precision"] <= 1 and now["promised_precision"] == pytest.approx(0.8)
    words = autoaccept.describe_audit(now)
    if now["audits"] == 28:              # too few images left for a new round: the spent one shows
        assert f"audit of model v2 (spent): 95% lower bound on precision {ready['bound']:.1%}" in words
    else:
        assert "answered by people" in words
    # Undo: every auto label retracted by new events, nothing rewritten.
    events_before = len(project.store.label_events(project.id))
    assert autoaccept.undo(project) == len(accepted)
    assert autoaccept.auto_accepted(project) == []
    assert len(project.store.label_events(project.id)) == events_before + len(accepted)


# -- the auto-accept command: the Rules page's rules from a shell --------------------------------

@pytest.fixture
def cli_project(tmp_path, demo_project, shared_cache):
    paths = Paths(tmp_path / "data", cache_dir=shared_cache)
    root = small_folder(demo_project.root, tmp_path / "animals", per_class=30)
    project = create_project(Store(paths.database), "a", root, paths,
                             settings=Settings(seeds_per_class=3, holdout_fraction=0.3))
    return project, ["--data", str(tmp_path / "data"), "auto-accept", "a"]


def test_auto_accept_command_audits_first_asks_runs_and_undoes(tmp_path, demo_project, shared_cache,
                                                                capsys, monkeypatch):
    from loop.__main__ import main

    project = audited_project(tmp_path, demo_project, shared_cache)
    argv = ["--data", str(tmp_path / "data"), "auto-accept", "a"]
    monkeypatch.setenv("JUICER_CACHE", str(project.paths.cache))
    labels_before = len(project.store.current_labels(project.id))
    assert main([*argv, "--precision", "0.8"]) == 0                # a preview changes nothing
    out = capsys.readouterr().out
    assert "needs at least 14 audited images above a threshold: 0 so far" in out
    assert "would label 0 pool image(s) now and send 28 to people as an audit" in out
    assert "auto-accept is off; 0 auto-accepted label(s) in force; audit: no audit round yet" in out
    assert project.store.audits(project.id) == []
    assert main([*argv, "--precision", "0.8", "--now"]) == 0       # the audit goes out, nothing labeled
    out = capsys.readouterr().out
    assert "accepted 0 image(s), sent 28 to people as an audit" in out
    assert "0 of 28 image(s) of the audit of model v2 answered by people" in out
    assert len(project.store.current_labels(project.id)) == labels_before
    answer(project, [r["image_id"] for r in project.store.audits(project.id)])
    would = autoaccept.preview(project, 0.8, project.settings.audit_share)["would_accept"]
    monkeypatch.setattr(autoaccept, "CONFIRM_ABOVE", max(would - 1, 0))   # this count is "large"
    assert would > 0
    assert main([*argv, "--precision", "0.8", "--now"]) == 1
    out = capsys.readouterr().out
    assert f"not done: this would label {would:,} image(s)" in out and "run again with --yes" in out
    assert "lower bound on precision" in out and "promised 80.0%" in out
    assert len(autoaccept.auto_accepted(project)) == 0
    assert main([*argv, "--precision", "0.8", "--on", "--yes"]) == 0
    out = capsys.readouterr().out
    accepted = len(autoaccept.auto_accepted(project))
    assert accepted == would and f"accepted {accepted:,} image(s)" in out
    assert f"auto-accept is on at 80.0%; {accepted:,} auto-accepted label(s) in force" in out
    assert "measured precision" in out
    assert Project.open("a", project.paths.root).settings.auto_accept_precision == 0.8
    assert main([*argv, "--undo"]) == 0
    assert f"retracted {accepted:,}" in capsys.readouterr().out
    assert autoaccept.auto_accepted(project) == []
    assert main([*argv, "--off"]) == 0
    assert "auto-accept is off" in capsys.readouterr().out
    assert Project.open("a", project.paths.root).settings.auto_accept_precision is None


@pytest.mark.parametrize("extra, message", [
    ([], "--precision P is needed"),
    (["--precision", "1.5", "--now"], "--precision is a share in [0.5, 1)"),
    (["--precision", "0.9", "--now", "--off"], "choose one of --now, --on, --off, --undo"),
])
def test_auto_accept_command_refuses_bad_input(cli_project, capsys, extra, message):
    from loop.__main__ import main

    project, argv = cli_project
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert autoaccept.auto_accepted(project) == []


def test_auto_accept_command_names_an_unknown_project(tmp_path, capsys):
    from loop.__main__ import main

    assert main(["--data", str(tmp_path), "auto-accept", "nope", "--precision", "0.9"]) == 2
    assert "no project 'nope'" in capsys.readouterr().err
