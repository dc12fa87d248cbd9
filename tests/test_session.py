"""Labeling sessions: leases, answers tied to the image shown, conflicts kept (never written over
a label), undo of one's own answers only, nothing stranded at the end, grid mode, second opinions."""

import time

import pytest

from loop.project import Paths, create_project
from loop.session import LabelingSession
from loop.settings import Settings
from loop.store import Store, StoreError
from loop.trainer import Trainer

# Every test here on SQLite and on PostgreSQL (JUICER_DB names the test's database there).
from tests.postgres import backend, database, postgres_server, use_backend  # noqa: F401
from tests.test_project import CLASSES, small_folder


@pytest.fixture
def project(tmp_path, demo_project, shared_cache):
    paths = Paths(tmp_path / "data", cache_dir=shared_cache)
    root = small_folder(demo_project.root, tmp_path / "animals", per_class=12)
    return create_project(Store(paths.database), "s", root, paths,
                          settings=Settings(holdout_fraction=0.25, batch_size=4))


def truth(project, image_id):
    image = project.store.image(project.id, image_id)
    return project.class_names[project.class_index[image["known_class_id"]]]


def test_two_annotators_never_hold_the_same_image(project):
    ana, ben = LabelingSession(project, "ana"), LabelingSession(project, "ben")
    skipped = set()
    for _ in range(8):
        a, b = ana.window(), ben.window()
        assert not {i.image_id for i in a} & {i.image_id for i in b}
        ana.answer(a[0].image_id, a[0].suggestion)
        ben.answer(b[0].image_id, None)                               # a skip
        skipped.add(b[0].image_id)
    # Ben's skipped images never come back to him (they may go to someone else).
    assert not {i.image_id for i in ben.window()} & skipped


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
        outcome = session.answer(item.image_id, CLASSES[k % 3] if k != 2 else None)  # one skip
        assert outcome.status == "draft" and outcome.submitted == (k == 3)
    labels = project.store.current_labels(project.id)
    assert len(labels) == before + 3 and answered[2] not in labels
    assert all(e["annotator"] == "ana" for e in project.store.label_events(project.id)[-3:])
    assert trainer.wait(timeout=60)
    trainer.close()
    assert project.store.latest_model_version(project.id)["version"] == 2


def test_an_answer_names_an_image_shown_to_its_annotator(project):
    ana, ben = LabelingSession(project, "ana"), LabelingSession(project, "ben")
    shown_to_ana = ana.current().image_id
    unseen = next(i["id"] for i in project.store.images(project.id, split="pool")
                  if i["id"] not in project.store.current_labels(project.id)
                  and not project.store.shown_to(project.id, i["id"], "ben")
                  and i["id"] != shown_to_ana)
    with pytest.raises(StoreError, match="never shown to ben"):
        ben.answer(unseen, "Cat")                # an image that was never on Ben's screen
    with pytest.raises(StoreError, match="never shown to ben"):
        ben.answer(shown_to_ana, "Cat")          # Ana's image
    assert project.store.drafts(project.id, "ben") == []
    assert ana.answer(shown_to_ana, "Cat").status == "draft"


def test_a_resent_answer_is_stored_once(project):
    ana = LabelingSession(project, "ana")
    item = ana.current()
    assert ana.answer(item.image_id, "Cat", uid="k-1").status == "draft"
    assert ana.answer(item.image_id, "Cat", uid="k-1").status == "duplicate"
    assert len(ana.pending()) == 1


def test_late_answer_after_lease_expiry_is_a_conflict_not_the_label(project):
    ana = LabelingSession(project, "ana", lease_seconds=1.0)
    held = ana.current().image_id
    assert project.store.lease(project.id, [held], "ben") == []        # held by ana
    time.sleep(1.3)                                                   # ana left the tab open
    assert project.store.lease(project.id, [held], "ben") == [held]
    ben = LabelingSession(project, "ben")
    ben.answer(held, "Zebra")
    ben.submit()
    late = ana.answer(held, "Cat")
    assert late.status == "conflict" and "ben" in late.message
    assert project.store.current_labels(project.id)[held] == project.store.class_id(project.id, "Zebra")
    conflicts = project.store.conflicts(project.id)
    assert [(c["image_id"], c["annotator"]) for c in conflicts] == [(held, "ana")]
    # An expired lease nobody took is simply renewed: the answer counts.
    other = ana.current().image_id
    time.sleep(1.3)
    assert ana.answer(other, "Cat").status == "draft"


def test_labeled_by_someone_else_since_shown_is_a_conflict(project):
    ana = LabelingSession(project, "ana")
    item = ana.current()
    ana.answer(item.image_id, "Cat")                                   # a draft, not yet submitted
    project.store.add_labels(project.id, [(item.image_id, "Cow")], "lead", "review")
    result = ana.submit()
    assert result["conflicts"] == [item.image_id] and result["labeled"] == []
    assert project.store.current_labels(project.id)[item.image_id] == project.store.class_id(project.id, "Cow")


def test_undo_walks_back_through_own_answers_only(project):
    session = LabelingSession(project, "ana", batch_size=2)
    one = session.current()
    session.answer(one.image_id, "Cat")
    assert session.undo() == one.image_id and session.pending() == []
    assert session.current().image_id == one.image_id       # it comes up again
    session.answer(one.image_id, "Cat")
    two = session.current()
    session.answer(two.image_id, "Cow")                      # batch of 2: submitted
    labels = project.store.current_labels(project.id)
    assert one.image_id in labels and two.image_id in labels
    assert session.undo() == two.image_id                    # undone by a new event
    assert two.image_id not in project.store.current_labels(project.id)
    assert session.current().image_id == two.image_id
    assert session.undo() == one.image_id                    # and on, back through the batch
    assert one.image_id not in project.store.current_labels(project.id)
    # Someone else corrects an answer of mine: my undo must not remove their label.
    session.answer(one.image_id, "Cat")
    session.submit()
    project.store.add_labels(project.id, [(one.image_id, "Zebra")], "lead", "review")
    with pytest.raises(StoreError, match="labeled by lead after you"):
        session.undo()
    assert project.store.current_labels(project.id)[one.image_id] == project.store.class_id(project.id, "Zebra")
    assert len(project.store.label_events(project.id, image_id=one.image_id)) == 4   # nothing rewritten


def test_answering_over_another_persons_label_is_a_conflict_and_undo_restores_mine(project):
    ben = LabelingSession(project, "ben", batch_size=1)
    item = ben.current()
    ben.answer(item.image_id, "Cat")                         # submitted at once
    project.store.lease(project.id, [item.image_id], "ana")   # shown to ana later
    ana = LabelingSession(project, "ana", batch_size=1)
    ana.answer(item.image_id, "Cow")
    assert project.store.conflicts(project.id)[0]["image_id"] == item.image_id   # disagreement kept
    cat = project.store.class_id(project.id, "Cat")
    assert project.store.current_labels(project.id)[item.image_id] == cat
    # Ben changes his own answer, then undoes the change: his first answer is back, not nothing.
    project.store.lease(project.id, [item.image_id], "ben")
    ben.answer(item.image_id, "Zebra")
    assert ben.undo() == item.image_id
    assert project.store.current_labels(project.id)[item.image_id] == cat


def test_nothing_is_stranded_when_the_queue_runs_dry(tmp_path, demo_project, shared_cache):
    paths = Paths(tmp_path / "data", cache_dir=shared_cache)
    root = small_folder(demo_project.root, tmp_path / "flat", per_class=2, labeled=False)
    project = create_project(Store(paths.database), "six", root, paths, class_names=list(CLASSES),
                             settings=Settings(holdout_fraction=0.2, batch_size=10))
    session = LabelingSession(project, "ana")
    answered = 0
    while (item := session.current()) is not None:
        session.answer(item.image_id, item.path.split("-")[0])
        answered += 1
    assert answered == 6
    assert session.pending() == [] and "submitted" in session.notice
    assert len(project.store.current_labels(project.id)) == 6


def test_trainer_submits_stale_drafts_and_retrains_on_start(project):
    project.update_settings(draft_max_age_seconds=0.5)
    session = LabelingSession(project, "ana")
    item = session.current()
    session.answer(item.image_id, "Cat")
    time.sleep(0.6)
    trainer = Trainer(project, poll_seconds=0.2)             # a restart after the tab was closed
    deadline = time.time() + 60
    while project.store.drafts(project.id) and time.time() < deadline:
        time.sleep(0.2)
    assert project.store.drafts(project.id) == []
    assert item.image_id in project.store.current_labels(project.id)
    assert trainer.wait(timeout=60)
    trainer.close()
    assert project.store.latest_model_version(project.id)["last_event_id"] == project.store.last_event_id(project.id)


def test_grid_mode_confirms_all_but_the_rejected_and_respects_others(project):
    ben = LabelingSession(project, "ben")
    held_by_ben = {i.image_id for i in ben.window()}
    session = LabelingSession(project, "ana")
    items = session.grid("Zebra", n=6)
    assert items and all(i.suggestion == "Zebra" for i in items)
    assert not {i.image_id for i in items} & held_by_ben
    confidences = [i.confidence for i in items]
    assert confidences == sorted(confidences, reverse=True)
    rejected = {items[0].image_id}
    result = session.confirm_grid("Zebra", items, rejected)
    assert set(result["labeled"]) == {i.image_id for i in items} - rejected
    assert items[0].image_id not in project.store.current_labels(project.id)
    assert items[0].image_id not in {lease["image_id"] for lease in project.store.leases(project.id)}
    # Looking at another class lets go of the last grid's images.
    first = session.grid("Cat", n=4)
    session.grid("Cow", n=4)
    held = {lease["image_id"] for lease in project.store.leases(project.id, "ana")}
    assert not {i.image_id for i in first} & held


def test_second_opinions_agree_or_become_conflicts(project):
    project.update_settings(overlap_share=1.0)
    ana = LabelingSession(project, "ana", batch_size=1)
    item = ana.current()
    ana.answer(item.image_id, truth(project, item.image_id))
    ben = LabelingSession(project, "ben", batch_size=1)
    second = ben.current()
    assert second.image_id == item.image_id and second.origin == "overlap"
    wrong = next(c for c in CLASSES if c != truth(project, item.image_id))
    ben.answer(second.image_id, wrong)
    conflict = project.store.conflicts(project.id)[0]
    assert conflict["annotator"] == "ben" and "disagrees with ana" in conflict["reason"]
    # Ana's label stays in force until the lead decides; a third person can be asked.
    assert project.store.current_labels(project.id)[item.image_id] == project.store.class_id(
        project.id, truth(project, item.image_id))
    with pytest.raises(StoreError, match="third person"):
        project.store.assign(project.id, item.image_id, "ben", by="lead")
    project.store.assign(project.id, item.image_id, "cem", by="lead")
    cem = LabelingSession(project, "cem", batch_size=1)
    third = cem.current()
    assert third.image_id == item.image_id and third.origin == "third-opinion"
    cem.answer(third.image_id, wrong)                    # sides with ben: that settles it
    assert project.store.conflicts(project.id) == []
    assert project.store.current_labels(project.id)[item.image_id] == project.store.class_id(project.id, wrong)


def test_lead_resolves_a_conflict_with_a_review_event(project):
    ana = LabelingSession(project, "ana", batch_size=1)
    item = ana.current()
    ana.answer(item.image_id, "Cat")
    project.store.lease(project.id, [item.image_id], "ben")
    LabelingSession(project, "ben", batch_size=1).answer(item.image_id, "Cow")
    assert len(project.store.conflicts(project.id)) == 1
    project.store.resolve_conflict(project.id, item.image_id, "lead", project.store.class_id(project.id, "Cow"))
    assert project.store.conflicts(project.id) == []
    last = project.store.label_events(project.id, image_id=item.image_id)[-1]
    assert (last["annotator"], last["source"]) == ("lead", "review")
    resolved = project.store.conflicts(project.id, status="resolved")
    assert resolved[0]["resolved_by"] == "lead" and resolved[0]["resolution_event_id"] == last["id"]


@pytest.mark.parametrize("name", ["  ", "folder", "auto", "seed", "auto-v3", "simulated-perfect",
                                  "a/b", "<b>x</b>"])
def test_reserved_and_bad_annotator_names_are_refused(project, name):
    with pytest.raises(StoreError):
        LabelingSession(project, name)


def test_undo_takes_back_a_submitted_skip_too(project):
    session = LabelingSession(project, "ana", batch_size=2)
    one = session.current()
    session.answer(one.image_id, "Cat")
    two = session.current()
    session.answer(two.image_id, None)                       # a skip completes the batch
    assert session.pending() == []
    assert session.undo(two.image_id) == two.image_id        # the skip, not the label before it
    assert session.current().image_id == two.image_id
    assert session.undo() == one.image_id


def test_a_flag_goes_to_the_lead_is_no_label_and_never_comes_back_to_its_flagger(project):
    ana, ben = LabelingSession(project, "ana"), LabelingSession(project, "ben")
    flagged = ana.current().image_id
    result = ana.apply([{"uid": "f1", "image_id": flagged, "action": "flag", "class": "Cow"}])
    assert result["acked"] == ["f1"]
    assert project.store.drafts(project.id, "ana")[0]["flagged"] == 1
    assert ana.submit()["flagged"] == [flagged]
    assert [f["image_id"] for f in project.store.flags(project.id)] == [flagged]
    assert flagged not in project.store.current_labels(project.id)         # not a label
    assert ana.progress()["flagged"] == 1
    # Out of everyone's queue while open, and never back to ana even after the lead looked.
    seen_by_ben = set()
    for _ in range(6):
        seen_by_ben |= {i.image_id for i in ben.window()}
        assert flagged not in {i.image_id for i in ana.window()}
        for session in (ana, ben):
            item = session.current()
            session.answer(item.image_id, truth(project, item.image_id))
    assert flagged not in seen_by_ben
    assert project.store.resolve_flag(project.id, flagged, "lead") == 1
    assert project.store.flags(project.id) == []
    assert flagged not in {i.image_id for i in ana.window(40)}
    assert flagged in {i.image_id for i in LabelingSession(project, "cy").window(40)}


def test_undo_takes_back_a_submitted_flag(project):
    ana = LabelingSession(project, "ana")
    image = ana.current().image_id
    ana.answer(image, None, flag=True)
    ana.submit()
    assert ana.undo() == image and project.store.flags(project.id) == []
    assert ana.current().image_id == image                                 # back on screen


def test_an_answer_is_changed_by_answering_again_pending_or_submitted(project):
    ana = LabelingSession(project, "ana")
    image = ana.current().image_id
    ana.apply([{"uid": "a1", "image_id": image, "action": "answer", "class": "Cow"},
               {"uid": "a2", "image_id": image, "action": "answer", "class": "Cat"}])
    assert [(d["image_id"], d["class_id"]) for d in ana.pending()] == [
        (image, project.store.class_id(project.id, "Cat"))]               # the draft replaced
    ana.submit()
    cat, zebra = (project.store.class_id(project.id, c) for c in ("Cat", "Zebra"))
    assert project.store.current_labels(project.id)[image] == cat
    ana.apply([{"uid": "a3", "image_id": image, "action": "answer", "class": "Zebra"}])
    ana.submit()
    assert project.store.current_labels(project.id)[image] == zebra        # a new event, mine
    assert [e["class_id"] for e in project.store.label_events(project.id, image)][-2:] == [cat, zebra]


def test_progress_is_one_read_of_left_mine_the_team_and_pending(project):
    ana, ben = LabelingSession(project, "ana"), LabelingSession(project, "ben")
    start = ana.progress()
    assert start["mine"] == 0 and start["pending"] == 0
    since = time.time()
    for _ in range(3):
        item = ana.current()
        ana.answer(item.image_id, truth(project, item.image_id))
    assert ana.progress(since)["pending"] == 3 and ana.progress(since)["mine_since"] == 0
    ana.submit()
    item = ben.current()
    ben.answer(item.image_id, truth(project, item.image_id))
    ben.submit()
    now = ana.progress(since)
    assert now["mine"] == 3 and now["mine_since"] == 3 and now["pending"] == 0
    people = len(project.store.current_labels(project.id, split="pool")) - len(
        project.store.current_labels(project.id, split="pool", source="auto"))
    assert now["team"] == people and now["left"] == start["left"] - 4
    assert ana.progress(time.time() + 1)["mine_since"] == 0


def test_grid_leases_only_what_it_shows_for_a_short_time(project):
    from loop.session import GRID_LEASE_SECONDS

    ana = LabelingSession(project, "ana")
    cows = ana.grid("Cow", n=4)
    leases = [lease for lease in project.store.leases(project.id, "ana") if lease["origin"] == "grid"]
    assert {lease["image_id"] for lease in leases} == {i.image_id for i in cows}
    assert all(lease["expires_at"] - time.time() <= GRID_LEASE_SECONDS + 1 for lease in leases)
    cats = ana.grid("Cat", n=4)                                            # another class shown
    held = {lease["image_id"] for lease in project.store.leases(project.id, "ana")
            if lease["origin"] == "grid"}
    assert held == {i.image_id for i in cats} and not held & {i.image_id for i in cows}
    ana.release_grid()                                                     # the grid is left
    assert not [lease for lease in project.store.leases(project.id, "ana") if lease["origin"] == "grid"]


def test_a_batch_does_not_come_in_folder_order(tmp_path, demo_project, shared_cache):
    """A window must not give the class away: with 10 classes, consecutive images in class
    order (folder order: Bear, Bear, ..., Zebra) would make nearly every pair non-decreasing."""
    import itertools
    import shutil

    from loop.queue import refresh_queue

    root = tmp_path / "ten"
    for folder in sorted(p for p in demo_project.root.iterdir() if p.is_dir()):
        (root / folder.name).mkdir(parents=True)
        for source in sorted(folder.glob("*.png"))[:8]:
            shutil.copy(source, root / folder.name / source.name)
    paths = Paths(tmp_path / "data", cache_dir=shared_cache)
    ten = create_project(Store(paths.database), "ten", root, paths,
                         settings=Settings(holdout_fraction=0.1, batch_size=10))
    refresh_queue(ten)
    position = {c: k for k, c in enumerate(ten.class_names)}
    pairs = nondecreasing = 0
    for name in ("ana", "ben", "cy"):
        window = LabelingSession(ten, name, window=12).window()
        classes = [position[truth(ten, i.image_id)] for i in window]
        assert [i.image_id for i in window] != sorted(i.image_id for i in window)
        pairs += len(classes) - 1
        nondecreasing += sum(b >= a for a, b in itertools.pairwise(classes))
    # In a random order about 55% of pairs are non-decreasing; in folder order nearly all.
    assert nondecreasing / pairs < 0.8, (nondecreasing, pairs)
