"""Suspected label errors: the out-of-fold math on cases with known answers, then a real project
(demo silhouettes) with labels made wrong on purpose: found, reviewed (kept, changed, flagged,
never in place), hold-out changes re-scoring stored evaluations, and the refusals."""

from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop import suspects
from loop.evaluation import evaluate
from loop.people import create_token
from loop.project import create_project
from loop.settings import Settings
from loop.store import Store, StoreError
from loop.trainer import Trainer
from tests.test_project import CLASSES, demo_folder, paths, small_folder  # noqa: F401 (fixtures)


# -- the math --------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=80), st.integers(2, 6), st.integers(0, 99))
def test_folds_are_stratified_and_cover_every_label(y, folds, seed):
    y = np.array(y)
    fold = suspects.fold_of(y, folds, seed)
    assert fold.shape == y.shape and set(fold) <= set(range(folds))
    for c in np.unique(y):     # each class spread over the folds as evenly as it can be
        counts = np.bincount(fold[y == c], minlength=folds)
        assert counts.max() - counts.min() <= 1


class RecordingHead:
    """A head that remembers what it trained on and predicts its training set's class shares."""

    fitted: ClassVar[list] = []

    def fit(self, X, y):
        RecordingHead.fitted.append(set(X[:, 0].astype(int)))
        self.shares = np.bincount(y, minlength=2) / len(y)
        return self

    def predict_proba(self, X):
        return np.tile(self.shares, (len(X), 1))


def test_out_of_fold_never_judges_a_label_with_a_head_that_learned_it():
    RecordingHead.fitted = []
    X = np.arange(20, dtype=float)[:, None]
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    probs = suspects.out_of_fold(X, y, RecordingHead, folds=5, seed=1)
    fold = suspects.fold_of(y, 5, 1)
    assert probs.shape == (20, 2) and len(RecordingHead.fitted) == 5
    for k, seen in enumerate(RecordingHead.fitted):
        assert seen == set(np.flatnonzero(fold != k))   # trained on every fold but its own


def test_confident_learning_finds_the_flipped_labels():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    probs = np.full((300, 3), 0.05)
    probs[np.arange(300), y] = 0.9             # a model sure of the truth
    noisy = y.copy()
    flipped = rng.choice(300, 15, replace=False)
    noisy[flipped] = (y[flipped] + 1) % 3
    issues = suspects.label_issues(noisy, probs)
    assert set(np.flatnonzero(issues)) == set(flipped)
    assert set(suspects.ranked(noisy, probs)[:15]) == set(flipped)
    assert suspects.label_issues(np.zeros(5, int), np.ones((5, 2)) / 2).sum() == 0   # one class


def test_a_class_with_too_few_labels_is_not_judged():
    y = np.array([0, 0, 0, 1, 1, 1, 2])
    assert suspects.judgeable(y, 3).tolist() == [True] * 6 + [False]


# -- a real project --------------------------------------------------------------------------

@pytest.fixture
def noisy_project(tmp_path, demo_folder, paths):  # noqa: F811
    """90 images of 3 animals, 3 seeds per class; 45 pool images labeled by "ann-a", 5 of them
    wrong, and 8 by "ann-b", all right; retrained and judged."""
    root = small_folder(demo_folder, tmp_path / "animals", per_class=30)
    project = create_project(Store(paths.database), "n", root, paths,
                             settings=Settings(seeds_per_class=3, holdout_fraction=0.25))
    store = project.store
    create_token(store, "lead", "lead")
    free = [i for i in store.images(project.id, split="pool")
            if i["id"] not in store.current_labels(project.id)]
    name = {c["id"]: c["name"] for c in project.class_rows}
    truth = [name[i["known_class_id"]] for i in free]
    wrong = {free[k]["id"] for k in range(0, 45, 9)}   # spread over the three classes
    given_a = [(i["id"], CLASSES[(CLASSES.index(t) + 1) % 3] if i["id"] in wrong else t)
               for i, t in zip(free[:45], truth[:45])]
    store.add_labels(project.id, given_a, "ann-a", "human")
    store.add_labels(project.id, [(i["id"], t) for i, t in zip(free[45:53], truth[45:53])],
                     "ann-b", "human")
    project.retrain()
    result = suspects.judge(project)
    return project, wrong, result


def test_judging_finds_the_wrong_labels_and_says_who_gave_them(noisy_project):
    project, wrong, result = noisy_project
    assert result["version"] == project.store.latest_model_version(project.id)["version"]
    assert result["judged"] == 9 + 45 + 8 and result["holdout_judged"] > 0
    pool = [s for s in project.store.suspects(project.id, issues_only=False) if s["split"] == "pool"]
    found = [s["image_id"] in wrong for s in pool]
    assert sum(found[:5]) >= 3 and sum(found[:10]) >= 4          # 5 wrong among 62
    queue = suspects.review_queue(project)
    assert wrong & {s["image_id"] for s in queue}
    row = next(s for s in queue if s["image_id"] in wrong)
    assert row["annotator"] == "ann-a" and row["given"] != row["predicted"]
    assert row["p_predicted"] > row["p_given"]
    assert row["event_id"] == project.store.latest_events(project.id)[row["image_id"]]["id"]
    rates = {r["annotator"]: r for r in suspects.suspicion_by_annotator(project)}
    assert rates["ann-a"]["judged"] == 45 and rates["ann-b"]["judged"] == 8
    assert rates["ann-a"]["suspected_rate"] > rates["ann-b"]["suspected_rate"]


def test_a_review_adds_events_and_never_rewrites_one(noisy_project):
    project, _, _ = noisy_project
    store = project.store
    queue = [s for s in suspects.review_queue(project) if s["split"] == "pool"]
    changed, kept = queue[0], queue[1]
    before = {e["id"]: dict(e) for e in store.label_events(project.id)}
    row = suspects.review(project, changed["image_id"], "lead", "changed", changed["predicted"],
                          changed["event_id"])
    assert row["decision"] == "changed" and row["annotator"] == changed["annotator"]
    suspects.review(project, kept["image_id"], "lead", "kept", event_id=kept["event_id"])
    after = {e["id"]: e for e in store.label_events(project.id)}
    assert all(after[i] == e for i, e in before.items())      # nothing updated in place
    new = [e for i, e in after.items() if i not in before]
    assert [(e["source"], e["image_id"], e["annotator"]) for e in new] == [
        ("review", changed["image_id"], "lead")]
    labels = store.current_labels(project.id)
    assert labels[changed["image_id"]] == changed["predicted_class_id"]
    assert labels[kept["image_id"]] == kept["class_id"]
    open_ids = {s["image_id"] for s in store.suspects(project.id)}
    assert changed["image_id"] not in open_ids and kept["image_id"] not in open_ids
    # Judged again, the label the review set is judged but settled: never queued again.
    project.retrain()
    suspects.judge(project)
    judged = {s["image_id"]: s for s in store.suspects(project.id, issues_only=False, open_only=False)}
    assert judged[changed["image_id"]]["source"] == "review"
    assert changed["image_id"] not in {s["image_id"] for s in store.suspects(project.id, issues_only=False)}
    rates = {r["annotator"]: r for r in suspects.suspicion_by_annotator(project)}
    assert rates[changed["annotator"]]["reviewed"] >= 1


def test_flagging_withdraws_the_label_and_flags_the_image(noisy_project):
    project, _, _ = noisy_project
    suspect = suspects.review_queue(project)[0]
    suspects.review(project, suspect["image_id"], "lead", "flagged", event_id=suspect["event_id"])
    assert suspect["image_id"] not in project.store.current_labels(project.id)
    assert suspect["image_id"] in {f["image_id"] for f in project.store.flags(project.id)}


def test_a_stale_or_bad_review_is_refused_and_stores_nothing(noisy_project):
    project, _, _ = noisy_project
    store = project.store
    suspect = next(s for s in suspects.review_queue(project) if s["split"] == "pool")
    store.add_labels(project.id, [(suspect["image_id"], suspect["given"])], "ann-b", "human")
    events = len(store.label_events(project.id))
    with pytest.raises(StoreError, match="changed since it was shown"):
        suspects.review(project, suspect["image_id"], "lead", "changed", suspect["predicted"],
                        suspect["event_id"])
    other = next(s for s in suspects.review_queue(project) if s["annotator"] == "ann-a")
    with pytest.raises(StoreError, match="does not exist"):
        suspects.review(project, other["image_id"], "lead", "changed", "<b>Dragon</b>", other["event_id"])
    with pytest.raises(StoreError, match="decision"):
        suspects.review(project, other["image_id"], "lead", "delete", event_id=other["event_id"])
    create_token(store, "ann-a", "annotator")
    with pytest.raises(StoreError, match="second person"):
        suspects.review(project, other["image_id"], "ann-a", "kept", event_id=other["event_id"])
    with pytest.raises(StoreError, match="second person"):
        store.assign_review(project.id, other["image_id"], "ann-a", by="lead")
    with pytest.raises(StoreError, match="not a person"):
        store.assign_review(project.id, other["image_id"], "nobody", by="lead")
    assert len(store.label_events(project.id)) == events and not store.reviews(project.id)


def test_a_second_person_reviews_what_the_lead_sent_them(noisy_project):
    project, _, _ = noisy_project
    store = project.store
    create_token(store, "rita", "annotator")
    suspect = next(s for s in suspects.review_queue(project) if s["annotator"] == "ann-a")
    assert suspects.review_queue(project, reviewer="rita") == []
    store.assign_review(project.id, suspect["image_id"], "rita", by="lead")
    mine = suspects.review_queue(project, reviewer="rita")
    assert [s["image_id"] for s in mine] == [suspect["image_id"]] and mine[0]["assigned_to"] == "rita"
    suspects.review(project, suspect["image_id"], "rita", "changed", suspect["predicted"],
                    mine[0]["event_id"])
    assert suspects.review_queue(project, reviewer="rita") == []


def test_a_changed_holdout_label_rescores_every_stored_evaluation(noisy_project):
    project, _, _ = noisy_project
    store = project.store
    holdout = store.current_labels(project.id, split="holdout")
    image_id = min(holdout)
    event = store.latest_events(project.id)[image_id]
    other = next(c for c in project.class_rows if c["id"] != holdout[image_id])
    before = store.evaluations(project.id)
    assert len(before) >= 2
    row = suspects.review(project, image_id, "lead", "changed", other["name"], event["id"])
    after = store.evaluations(project.id)
    assert sorted(row["rescored"]) == sorted(e["id"] for e in before)
    index = {c["id"]: k for k, c in enumerate(project.class_rows)}
    for old, new in zip(before, after):
        ids, classes, probs = store.holdout_predictions(new["id"])
        assert classes[list(ids).index(image_id)] == other["id"]
        expected = evaluate(np.array([index[c] for c in classes]), probs, project.class_names)
        assert new["accuracy"] == pytest.approx(expected["accuracy"])
        assert new["rescored_at"] is not None and old["rescored_at"] is None
        assert abs(new["accuracy"] - old["accuracy"]) == pytest.approx(1 / old["n_holdout"])
    assert any("re-scored" in e["message"] for e in store.log_entries(project.id, "holdout_rescored"))
    # Flagged (withdrawn) hold-out labels leave the scoring altogether.
    suspects.review(project, image_id, "lead", "flagged", event_id=store.latest_events(project.id)[image_id]["id"])
    assert all(e["n_holdout"] == b["n_holdout"] - 1 for e, b in zip(store.evaluations(project.id), before))


def test_auto_accepted_labels_are_suspects_too(noisy_project):
    project, _, _ = noisy_project
    store = project.store
    free = [i for i in store.images(project.id, split="pool")
            if i["id"] not in store.current_labels(project.id)][:6]
    store.add_labels(project.id, [(i["id"], CLASSES[0]) for i in free], "auto", "auto")
    project.retrain()
    suspects.judge(project)
    judged = {s["image_id"]: s for s in store.suspects(project.id, issues_only=False)}
    assert all(judged[i["id"]]["source"] == "auto" for i in free)
    name = {c["id"]: c["name"] for c in project.class_rows}
    wrong = [i["id"] for i in free if name[i["known_class_id"]] != CLASSES[0]]
    flagged = {s["image_id"] for s in store.suspects(project.id)}
    assert wrong and set(wrong) & flagged


def test_the_trainer_judges_after_each_version_in_the_background(noisy_project):
    project, _, _ = noisy_project
    store = project.store
    free = [i for i in store.images(project.id, split="pool")
            if i["id"] not in store.current_labels(project.id)][:3]
    trainer = Trainer(project, poll_seconds=0.2)
    try:
        store.add_labels(project.id, [(i["id"], CLASSES[0]) for i in free], "ann-b", "human")
        assert trainer.wait(trainer.request(), timeout=120)
        assert trainer.wait_judged(timeout=120)
        assert store.suspects_version(project.id) == store.latest_model_version(project.id)["version"]
        assert trainer.judgements and not trainer.judge_errors
    finally:
        trainer.close()


def test_the_command_line_lists_and_reviews_suspects(noisy_project, paths, capsys):  # noqa: F811
    from loop.__main__ import main

    project, _, _ = noisy_project
    store = project.store
    lead = create_token(store, "boss", "lead")
    ana = create_token(store, "ana", "annotator")
    data = ["--data", str(paths.root)]
    assert main([*data, "review", "n", "--token", lead]) == 0
    out = capsys.readouterr().out
    suspect = suspects.review_queue(project)[0]
    assert f"image {suspect['image_id']:>6}@{suspect['event_id']}" in out and "ann-a:" in out
    assert main([*data, "review", "n", "--token", ana]) == 0        # nothing sent to ana yet
    assert "0 open sent to ana" in capsys.readouterr().out
    assert main([*data, "review", "n", f"{suspect['image_id']}@{suspect['event_id']}",
                 "--class", suspect["predicted"], "--token", lead]) == 0
    assert store.current_labels(project.id)[suspect["image_id"]] == suspect["predicted_class_id"]
    # The label seen is no longer the one in force: refused, with the reason.
    assert main([*data, "review", "n", f"{suspect['image_id']}@{suspect['event_id']}", "--keep",
                 "--token", lead]) == 2
    assert "changed since it was shown" in capsys.readouterr().err
    assert main([*data, "review", "n", "../etc", "--keep", "--token", lead]) == 2
    other = suspects.review_queue(project)[0]
    assert main([*data, "review", "n", str(other["image_id"]), "--send-to", "ana", "--token", ana]) == 2
    assert "lead role" in capsys.readouterr().err


def test_an_annotator_reviews_only_what_was_sent_to_them_and_a_revoked_one_nothing(noisy_project):
    from loop.people import revoke
    from loop.team import ratings

    project, _, _ = noisy_project
    store = project.store
    create_token(store, "rita", "annotator")
    create_token(store, "sam", "annotator")
    first, second = [s for s in suspects.review_queue(project) if s["annotator"] == "ann-a"][:2]
    count = store.open_suspects_count(project.id)
    assert count == len(suspects.review_queue(project, limit=None)) and count >= 2
    with pytest.raises(StoreError, match="was not sent to rita"):
        suspects.review(project, first["image_id"], "rita", "kept", event_id=first["event_id"])
    with pytest.raises(StoreError, match="changed since"):     # the lead saw an older label
        store.assign_review(project.id, first["image_id"], "rita", by="lead", event_id=first["event_id"] - 1)
    store.assign_review(project.id, first["image_id"], "rita", by="lead", event_id=first["event_id"])
    store.assign_review(project.id, second["image_id"], "sam", by="lead", event_id=second["event_id"])
    assert store.open_suspects_count(project.id, "rita") == 1
    with pytest.raises(StoreError, match="was not sent to rita"):   # sam's, not hers
        suspects.review(project, second["image_id"], "rita", "kept", event_id=second["event_id"])
    revoke(store, "sam")
    with pytest.raises(StoreError, match="revoked"):
        suspects.review(project, second["image_id"], "sam", "kept", event_id=second["event_id"])
    suspects.review(project, first["image_id"], "rita", "changed", first["predicted"], first["event_id"])
    assert store.open_suspects_count(project.id, "rita") == 0
    # A review saw the label and the model's doubt: it is not an independent rating.
    assert "rita" not in ratings(project).get(first["image_id"], {})
