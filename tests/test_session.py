import time

import pytest

from loop.project import Paths, create_project
from loop.session import LabelingSession
from loop.settings import Settings
from loop.store import Store, StoreError
from loop.trainer import Trainer
from tests.test_project import CLASSES, small_folder


@pytest.fixture
def project(tmp_path, demo_project, shared_cache):
    paths = Paths(tmp_path / "data", cache_dir=shared_cache)
    root = small_folder(demo_project.root, tmp_path / "animals", per_class=12)
    return create_project(Store(paths.database), "s", root, paths,
                          settings=Settings(holdout_fraction=0.25, batch_size=4))


def test_two_annotators_never_get_the_same_image(project):
    ana, ben = LabelingSession(project, "ana"), LabelingSession(project, "ben")
    seen_ana, seen_ben = set(), set()
    for _ in range(6):
        a, b = ana.current(), ben.current()
        assert a.image_id != b.image_id
        seen_ana.add(a.image_id)
        seen_ben.add(b.image_id)
        ana.answer(a.image_id, a.suggestion)
        ben.answer(b.image_id, None)
    assert not seen_ana & seen_ben


def test_refresh_keeps_answers_and_place(project):
    first = LabelingSession(project, "ana")
    item = first.current()
    first.answer(item.image_id, "Cow")
    following = first.current()
    reopened = LabelingSession(project, "ana")          # a refresh, or a second tab
    assert [d["image_id"] for d in reopened.pending()] == [item.image_id]
    assert reopened.current().image_id == following.image_id


def test_batch_is_submitted_at_batch_size_and_retrains(project):
    trainer = Trainer(project)
    session = LabelingSession(project, "ana", trainer)
    before = len(project.store.current_labels(project.id))
    answered = []
    for k in range(4):
        item = session.current()
        assert item.model_version == 1 and item.suggestion in CLASSES   # seeds trained v1
        answered.append(item.image_id)
        submitted = session.answer(item.image_id, CLASSES[k % 3] if k != 2 else None)  # one skip
        assert submitted == (k == 3)
    labels = project.store.current_labels(project.id)
    assert len(labels) == before + 3 and answered[2] not in labels
    assert all(e["annotator"] == "ana" for e in project.store.label_events(project.id)[-3:])
    assert trainer.wait(timeout=60)
    trainer.close()
    assert project.store.latest_model_version(project.id)["version"] == 2


def test_undo_draft_and_submitted_answer(project):
    session = LabelingSession(project, "ana", batch_size=2)
    one = session.current()
    session.answer(one.image_id, "Cat")
    assert session.undo() == one.image_id and session.pending() == []
    assert session.current().image_id == one.image_id       # it comes up again
    session.answer(one.image_id, "Cat")
    two = session.current()
    session.answer(two.image_id, "Cow")                      # batch of 2: submitted
    assert two.image_id in project.store.current_labels(project.id)
    assert session.undo() == two.image_id                    # retracted by a new event
    assert two.image_id not in project.store.current_labels(project.id)
    assert session.current().image_id == two.image_id


def test_expired_lease_frees_the_image(project):
    ana = LabelingSession(project, "ana", lease_seconds=2.0)
    held = ana.current().image_id
    assert project.store.lease(project.id, [held], "ben") == []        # held by ana
    assert held not in {LabelingSession(project, "ben").current().image_id}
    time.sleep(2.2)                                                   # ana closed the tab
    assert project.store.lease(project.id, [held], "ben") == [held]
    # Ben holds it now: ana's late answer is refused rather than silently doubled.
    with pytest.raises(StoreError, match="another annotator"):
        ana.answer(held, "Cat")


def test_grid_mode_confirms_all_but_the_rejected(project):
    session = LabelingSession(project, "ana")
    items = session.grid("Zebra", n=6)
    assert items and all(i.suggestion == "Zebra" for i in items)
    confidences = [i.confidence for i in items]
    assert confidences == sorted(confidences, reverse=True)
    rejected = {items[0].image_id}
    labeled = session.confirm_grid("Zebra", items, rejected)
    assert set(labeled) == {i.image_id for i in items} - rejected
    assert items[0].image_id not in project.store.current_labels(project.id)
    assert items[0].image_id not in {lease["image_id"] for lease in project.store.leases(project.id)}


def test_nameless_annotator_is_refused(project):
    with pytest.raises(StoreError, match="name yourself"):
        LabelingSession(project, "  ")
