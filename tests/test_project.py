import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loop.project as project_module
from loop.project import (Paths, Project, ProjectError, copy_groups, create_project, known_classes,
                          stratified_groups)
from loop.queue import next_queries
from loop.settings import Settings
from loop.store import Store
from loop.trainer import Trainer
from models.images import IMAGE_SUFFIXES
from tests.postgres import backend, database, postgres_server  # noqa: F401

CLASSES = ("Cat", "Cow", "Zebra")


@pytest.fixture(scope="module")
def demo_folder(demo_project):
    return demo_project.root


def small_folder(demo_folder, target, per_class=10, labeled=True):
    """A real-image folder: `per_class` demo silhouettes of three animals."""
    for name in CLASSES:
        sources = sorted((demo_folder / name).glob("*.png"))[:per_class]
        folder = target / name if labeled else target
        folder.mkdir(parents=True, exist_ok=True)
        for source in sources:
            shutil.copy(source, folder / (source.name if labeled else f"{name}-{source.name}"))
    return target


def folder_with_copies(demo_folder, target, copies: dict[str, list[int]]):
    """A labeled folder where class `name` holds demo silhouettes of that animal, the k-th one
    written `copies[name][k]` times (as k-c.png), so each class has duplicate groups of chosen sizes."""
    for name, counts in copies.items():
        sources = sorted((demo_folder / name).glob("*.png"))[:len(counts)]
        (target / name).mkdir(parents=True, exist_ok=True)
        for k, (source, n) in enumerate(zip(sources, counts)):
            for c in range(n):
                shutil.copy(source, target / name / f"{k}-{c}.png")
    return target


@pytest.fixture
def paths(tmp_path, shared_cache):
    return Paths(tmp_path / "data", cache_dir=shared_cache)


def test_labeled_folder_with_bad_files(tmp_path, demo_folder, paths):
    root = small_folder(demo_folder, tmp_path / "animals")
    (root / "Cat" / "empty.png").write_bytes(b"")
    (root / "Cow" / "notes.jpg").write_text("not an image")
    good = (root / "Zebra").glob("*.png").__next__().read_bytes()
    (root / "Zebra" / "cut.png").write_bytes(good[: len(good) // 3])
    (root / "Zebra" / "readme.txt").write_text("ignored: not an image suffix")
    outside = tmp_path / "secret.png"
    shutil.copy(next((root / "Cat").glob("*.png")), outside)
    os.symlink(outside, root / "Cat" / "link.png")

    project = create_project(Store(paths.database), "animals", root, paths,
                             settings=Settings(seeds_per_class=2, holdout_fraction=0.3))
    status = project.status()
    reasons = dict(status["skipped"])
    assert set(reasons) == {"Cat/empty.png", "Cow/notes.jpg", "Zebra/cut.png", "Cat/link.png"}
    assert "empty" in reasons["Cat/empty.png"]
    assert "not a readable image" in reasons["Cow/notes.jpg"]
    assert "corrupt or truncated" in reasons["Zebra/cut.png"]
    assert "outside the project folder" in reasons["Cat/link.png"]
    assert status["images"] == 30 and status["classes"] == list(CLASSES)

    holdout = project.store.images(project.id, split="holdout")
    assert 6 <= len(holdout) <= 12
    per_class = np.bincount([project.class_index[i["known_class_id"]] for i in holdout])
    assert per_class.min() >= 2                                      # stratified
    labels = project.store.current_labels(project.id)
    assert all(i["id"] in labels for i in holdout)                  # imported from the folders
    seeds = [e for e in project.store.label_events(project.id) if e["source"] == "seed"]
    assert len(seeds) == 6 and not {e["image_id"] for e in seeds} & {i["id"] for i in holdout}


def test_bad_folders_are_refused_clearly(tmp_path, paths):
    store = Store(paths.database)
    with pytest.raises(ProjectError, match="does not exist"):
        create_project(store, "x", tmp_path / "missing", paths)
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(ProjectError, match="1 class sub-folder"):
        create_project(store, "x", tmp_path / "one", paths)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProjectError, match="holds no image files"):
        create_project(store, "x", tmp_path / "empty", paths, class_names=["a", "b"])
    assert store.projects() == []


def test_retrain_stores_version_and_scored_holdout(tmp_path, demo_folder, paths):
    root = small_folder(demo_folder, tmp_path / "animals")
    project = create_project(Store(paths.database), "a", root, paths,
                             settings=Settings(seeds_per_class=3, holdout_fraction=0.3))
    first = project.store.latest_model_version(project.id)
    assert first["version"] == 1 and first["n_labels"] == 9          # trained on the seeds at once
    assert project.retrain() is None                                 # nothing new: stale, not published
    version = project.retrain(force=True)
    assert version["version"] == 2 and version["n_labels"] == 9
    assert os.path.exists(version["weights_path"])
    assert version["last_event_id"] == project.store.last_event_id(project.id)
    evaluation = project.store.evaluations(project.id)[-1]
    ids, classes, probs = project.store.holdout_predictions(evaluation["id"])
    assert len(ids) == evaluation["n_holdout"] == len(project.store.images(project.id, split="holdout"))
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert len(evaluation["rules"]) == 7 and set(evaluation["per_class"]) == set(CLASSES)
    # Queries never offer hold-out images in a labeled project, and carry the version.
    queries = next_queries(project, 50)
    holdout = {i["id"] for i in project.store.images(project.id, split="holdout")}
    assert queries and not {q.image_id for q in queries} & holdout
    assert all(q.model_version == 2 and q.suggestion in CLASSES for q in queries)


def test_a_strategy_ranks_a_bounded_random_sample_of_a_big_pool(demo_project, monkeypatch):
    """Past MAX_CANDIDATES unlabeled pool images the strategy sees (and the queue reads the
    embeddings of) a random sample of that many, drawn afresh each time: time and memory stay
    bounded however big the pool."""
    import loop.queue

    read: list[list[int]] = []
    embeddings_of = demo_project.embeddings_of

    def spy(images, backbone=None):
        read.append([i["id"] for i in images])
        return embeddings_of(images, backbone)

    monkeypatch.setattr(loop.queue, "MAX_CANDIDATES", 120)
    monkeypatch.setattr(demo_project, "embeddings_of", spy)
    head, _ = demo_project.current_head()
    assert len(demo_project.store.images(demo_project.id, split="pool")) > 1000
    first = next_queries(demo_project, 10, head=head, rng=np.random.default_rng(1))
    second = next_queries(demo_project, 10, head=head, rng=np.random.default_rng(2))
    assert len(read) == 2 and all(len(ids) == 120 for ids in read)
    assert set(read[0]) != set(read[1])
    assert len(first) == len(second) == 10
    assert {q.image_id for q in first if q.split == "pool"} <= set(read[0])


def test_flat_folder_asks_for_holdout_labels_interleaved(tmp_path, demo_folder, paths):
    root = small_folder(demo_folder, tmp_path / "flat", labeled=False)
    project = create_project(Store(paths.database), "flat", root, paths, class_names=list(CLASSES),
                             settings=Settings(holdout_fraction=0.2, holdout_every=3))
    assert project.store.label_events(project.id) == []            # no labels until people give them
    holdout = {i["id"] for i in project.store.images(project.id, split="holdout")}
    assert len(holdout) == 6
    queries = next_queries(project, 9, rng=np.random.default_rng(0))
    kinds = [q.split for q in queries]
    assert kinds == ["pool", "pool", "holdout"] * 3
    assert all(q.suggestion is None for q in queries)               # no model yet
    answers = [(q.image_id, q.path.split("-")[0]) for q in queries]   # file names carry the truth
    project.store.add_labels(project.id, answers, annotator="ana", source="human")
    version = project.retrain()
    assert version is not None
    ids, _, _ = project.labeled("pool")
    assert not set(ids.tolist()) & holdout                           # hold-out never trained on
    assert version["evaluation"]["n_holdout"] == 3


def test_crash_while_embedding_resumes_without_loss(tmp_path, demo_folder, paths):
    root = small_folder(demo_folder, tmp_path / "animals", per_class=3)
    for i in range(3):   # new content: not in the shared cache yet
        image = np.asarray(__import__("PIL.Image").Image.open(next((root / "Cat").glob("*.png"))))
        __import__("PIL.Image").Image.fromarray(np.roll(image, i + 1, axis=1)).save(root / "Cat" / f"r{i}.png")
    cache_paths = Paths(paths.root, cache_dir=tmp_path / "fresh-cache")

    def crash(done, total):
        raise KeyboardInterrupt("power cut")

    with pytest.raises(KeyboardInterrupt):
        create_project(Store(cache_paths.database), "c", root, cache_paths, on_progress=crash)
    project = Project(Store(cache_paths.database), "c", cache_paths)   # the project row survived
    project.prepare()
    assert project.status()["images"] == 12 and project.status()["holdout"] >= 1


def test_trainer_folds_batches_that_arrive_during_a_retrain(tmp_path, demo_folder, paths):
    root = small_folder(demo_folder, tmp_path / "animals")
    project = create_project(Store(paths.database), "t", root, paths, settings=Settings(holdout_fraction=0.3))
    started, release = threading.Event(), threading.Event()
    real_retrain = project.retrain

    def slow_retrain(**kwargs):
        started.set()
        release.wait(10)
        return real_retrain(**kwargs)

    project.retrain = slow_retrain
    trainer = Trainer(project)
    pool = [i["id"] for i in project.store.images(project.id, split="pool")
            if i["id"] not in project.store.current_labels(project.id)]
    project.store.add_labels(project.id, [(pool[3], CLASSES[0])], "ana", "human")
    trainer.request()
    assert started.wait(10)
    for k in range(3):                      # three batches while the first retrain runs
        project.store.add_labels(project.id, [(pool[k], CLASSES[k])], "ana", "human")
        trainer.request()
    assert trainer.busy
    release.set()
    assert trainer.wait(timeout=60)
    trainer.close()
    assert not trainer.errors
    # The stored seed version, then at most two retrains for four requests (the first one reads
    # the labels when it starts, after the slow step here), the last with every label.
    assert 2 <= len(trainer.versions) <= 3
    assert trainer.versions[-1]["n_labels"] == 3 + 4
    versions = project.store.model_versions(project.id)
    assert [v["last_event_id"] for v in versions] == sorted({v["last_event_id"] for v in versions})


# -- the hold-out draw ----------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(1, 6)), max_size=40),
       st.integers(-2, 120), st.integers(0, 2**32 - 1))
def test_stratified_groups_never_exceed_the_size(groups, size, seed):
    classes, sizes = [c for c, _ in groups], [n for _, n in groups]
    picked = stratified_groups(classes, sizes, size, np.random.default_rng(seed))
    assert len(set(picked)) == len(picked)
    assert sum(sizes[k] for k in picked) <= max(size, 0)
    outside = {c: classes.count(c) - sum(classes[k] == c for k in picked) for c in set(classes)}
    assert min(outside.values(), default=1) >= 1                    # no class vanishes from the pool
    room = max(size, 0) - sum(sizes[k] for k in picked)
    left = [k for k in range(len(groups)) if k not in picked]
    assert not [k for k in left if sizes[k] <= room and outside[classes[k]] > 1]   # filled up


def test_stratified_groups_split_in_proportion():
    classes = [c for c, n in enumerate([500, 300, 120, 60, 15, 4, 1]) for _ in range(n)]
    picked = stratified_groups(classes, [1] * len(classes), 500, np.random.default_rng(3))
    assert len(picked) == 500
    per_class = np.bincount([classes[k] for k in picked], minlength=7)
    assert np.abs(per_class - 500 * np.bincount(classes) / len(classes)).max() <= 1
    assert per_class[-1] == 0                                        # a lone image stays in the pool


def test_holdout_never_exceeds_holdout_size(tmp_path, demo_folder, paths):
    # Many duplicate groups (up to 4 copies) and awkward class sizes (40, 9 and 2 images): rounding
    # each class's share and then adding every copy of a drawn image overshot holdout_size.
    root = folder_with_copies(demo_folder, tmp_path / "animals", {
        "Cat": [1, 3, 1, 2, 4, 1, 1, 2, 3, 1, 1, 4, 2, 1, 1, 3, 1, 2, 1, 1, 2, 1, 1],
        "Cow": [2, 1, 3, 1, 2], "Zebra": [1, 1]})
    store, draws = Store(paths.database), set()
    for seed in range(4):
        project = create_project(store, f"a{seed}", root, paths, settings=Settings(
            seed=seed, holdout_size=11, holdout_fraction=0.6, seeds_per_class=1))
        images = project.store.images(project.id)
        holdout = [i for i in images if i["split"] == "holdout"]
        draws.add(frozenset(i["path"] for i in holdout))
        assert len(holdout) == 11 and project.status()["holdout"] == 11
        splits = {}
        for image in images:
            splits.setdefault(image["hash"], set()).add(image["split"])
        assert all(len(s) == 1 for s in splits.values())             # copies share a split
        per_class = np.bincount([project.class_index[i["known_class_id"]] for i in holdout], minlength=3)
        assert per_class[0] > per_class[1] >= per_class[2] and per_class[2] <= 1
        assert project.draw_holdout() == []                          # drawing again adds nothing
    assert len(draws) > 1                                            # still a random draw


def test_holdout_drawn_again_tops_up_to_holdout_size(tmp_path, demo_folder, paths):
    root = small_folder(demo_folder, tmp_path / "animals")
    project = create_project(Store(paths.database), "a", root, paths,
                             settings=Settings(holdout_size=8, holdout_fraction=0.2))
    assert len(project.store.images(project.id, split="holdout")) == 6          # 0.2 of 30
    cat = project.class_rows[0]["id"]
    held = project.store.images(project.id, split="holdout")[0]
    # Images added later: 20 new ones and a copy of a hold-out image, which joins its original.
    project.store.add_images(project.id, [{"path": f"Cat/new{k}.png", "hash": f"new{k}", "split": "pool",
                                           "known_class_id": cat} for k in range(20)]
                             + [{"path": "Cat/again.png", "hash": held["hash"], "split": "holdout",
                                 "known_class_id": held["known_class_id"]}])
    added = project.draw_holdout()                                   # min(8, 0.2 of 51) - 7
    assert len(added) == 1 and len(project.store.images(project.id, split="holdout")) == 8
    labels = project.store.current_labels(project.id, split="holdout")
    assert all(i in labels for i in added)                           # their folder labels imported
    assert project.draw_holdout() == []


def test_copies_in_two_class_folders_are_reported_and_kept_out_of_the_holdout(
        tmp_path, demo_folder, paths, capsys, monkeypatch):
    from loop.__main__ import main

    root = small_folder(demo_folder, tmp_path / "animals", per_class=4)
    cat, zebra = min((root / "Cat").glob("*.png")), max((root / "Zebra").glob("*.png"))
    shutil.copy(cat, root / "Cow" / "not-a-cow.png")
    shutil.copy(cat, root / "Cat" / "again.png")                     # a copy in its own class too
    shutil.copy(zebra, root / "Cat" / "striped.png")
    conflicted = {f"Cat/{cat.name}", "Cat/again.png", "Cow/not-a-cow.png", f"Zebra/{zebra.name}",
                  "Cat/striped.png"}
    store = Store(paths.database)
    for seed in range(4):
        project = create_project(store, f"a{seed}", root, paths, settings=Settings(
            seed=seed, holdout_fraction=0.9, seeds_per_class=1))
        holdout = {i["path"] for i in project.store.images(project.id, split="holdout")}
        assert holdout and not holdout & conflicted
        path_of = {i["id"]: i["path"] for i in project.store.images(project.id)}
        seeds = {path_of[e["image_id"]] for e in project.store.label_events(project.id)
                 if e["source"] == "seed"}
        assert seeds and not seeds & conflicted                       # nor a seed
    status = project.status()
    assert len(status["conflicts"]) == 2 and len(status["duplicates"]) == 2
    cat_cow = next(line for line in status["conflicts"] if "not-a-cow" in line)
    assert "Cat/again.png (Cat)" in cat_cow and "Cow/not-a-cow.png (Cow)" in cat_cow
    assert "Cat/striped.png (Cat)" in next(line for line in status["conflicts"] if "striped" in line)

    monkeypatch.setenv("JUICER_CACHE", str(paths.cache))
    assert main(["--data", str(paths.root), "status", "a3"]) == 0
    out = capsys.readouterr().out
    assert "2 image(s) have copies in different class folders" in out
    assert "Cow/not-a-cow.png (Cow)" in out and f"Zebra/{zebra.name} (Zebra)" in out


def holdout_as_before(images, settings):
    """The hold-out draw as it was when it read every image row at once (a list of dicts): the
    chunked, SQL-grouped draw must give the same images for the same seed."""
    held = sum(i["split"] == "holdout" for i in images)
    size = min(settings.holdout_size, round(settings.holdout_fraction * len(images))) - held
    candidates = [g for g in copy_groups(images).values()
                  if len(known_classes(g)) <= 1 and all(i["split"] == "pool" for i in g)]
    picked = stratified_groups([next(iter(known_classes(g)), None) for g in candidates],
                               [len(g) for g in candidates], size,
                               np.random.default_rng([settings.seed, 1]))
    return [i["id"] for k in picked for i in candidates[k]]


def seeds_as_before(images, settings):
    """The random seed draw as it was on the list of every image row."""
    rng = np.random.default_rng([settings.seed, 2])
    ambiguous = {h for h, g in copy_groups(images).items() if len(known_classes(g)) > 1}
    by_class: dict = {}
    for i in images:
        if i["split"] == "pool" and i["known_class_id"] is not None and i["hash"] not in ambiguous:
            by_class.setdefault(i["known_class_id"], []).append(i["id"])
    return [int(i) for c in sorted(by_class) for i in rng.choice(
        by_class[c], size=min(settings.seeds_per_class, len(by_class[c])), replace=False)]


def test_holdout_and_seeds_read_in_chunks_draw_as_the_whole_list_did(tmp_path, database,  # noqa: F811
                                                                   monkeypatch):
    # Store rows only (nothing is embedded by either draw): copies of up to 4 files in one class,
    # one file copied into two class folders (and once with no class), a skipped copy, images
    # without a folder class, one already in the hold-out; read 3 rows and 3 hashes at a time.
    monkeypatch.setattr(project_module, "PREPARE_CHUNK", 3)
    store = Store(database)
    rng = np.random.default_rng(5)
    for seed in range(5):
        config = Settings(seed=seed, holdout_size=9, holdout_fraction=0.5, seeds_per_class=2)
        pid = store.create_project(f"d{seed}", str(tmp_path), config.to_json(), list(CLASSES))
        cat, cow, zebra = (c["id"] for c in store.classes(pid))
        rows = [{"path": f"{k}-{c}.png", "hash": f"h{k}", "split": "pool", "known_class_id": klass}
                for k, (klass, n) in enumerate(zip(rng.choice([cat, cat, cow, zebra, None], 24),
                                                   rng.choice([1, 1, 1, 2, 3, 4], 24)))
                for c in range(n)]
        rows += [{"path": "amb-cat.png", "hash": "amb", "split": "pool", "known_class_id": cat},
                 {"path": "amb-cow.png", "hash": "amb", "split": "pool", "known_class_id": cow},
                 {"path": "amb-none.png", "hash": "amb", "split": "pool"},
                 {"path": "bad.png", "hash": "h0", "split": "pool", "status": "skipped"},
                 {"path": "held.png", "hash": "held", "split": "holdout", "known_class_id": cow}]
        store.add_images(pid, [rows[k] for k in rng.permutation(len(rows))])   # copies apart
        project = Project(store, f"d{seed}", Paths(tmp_path / "data"))
        expected = holdout_as_before(store.images(pid), config)
        drawn = project.draw_holdout()
        assert drawn == expected and 0 < len(drawn) <= 9 - 1
        images = store.images(pid)
        assert seeds_as_before(images, config) == project.draw_seeds()
        splits: dict = {}
        for image in images:
            splits.setdefault(image["hash"], set()).add(image["split"])
        assert all(len(s) == 1 for s in splits.values())                # copies go together
        assert splits["amb"] == {"pool"}                                 # the ambiguous one stays out
        seeds = {e["image_id"] for e in store.label_events(pid) if e["source"] == "seed"}
        assert seeds and not seeds & {i["id"] for i in images if i["hash"] == "amb"}


def labeled_as_before(project, split):
    """`Project.labeled` as it was, with a dict of every image of the split."""
    labels = project.store.current_labels(project.id, split=split)
    ids = np.array(sorted(labels), dtype=np.int64)
    rows = {i["id"]: i["hash"] for i in project.store.images(project.id, split=split)}
    X = project.cache.get([rows[i] for i in ids]) if len(ids) else np.zeros((0, 0), np.float32)
    return ids, X, np.array([project.class_index[labels[i]] for i in ids], dtype=np.int64)


def unlabeled_as_before(project, labeled_ids, limit, seed):
    """`Project.unlabeled_pool` as it was, on the list of every pool image's hash."""
    taken = {int(i) for i in labeled_ids}
    hashes = [i["hash"] for i in project.store.images(project.id, split="pool") if i["id"] not in taken]
    missing = set(project.cache.missing(hashes))
    hashes = [h for h in dict.fromkeys(hashes) if h not in missing]
    if len(hashes) > limit:
        rng = np.random.default_rng([project.settings.seed, seed, 11])
        hashes = [hashes[i] for i in np.sort(rng.choice(len(hashes), limit, replace=False))]
    return project.cache.get(hashes) if hashes else np.zeros((0, 0), np.float32)


def status_as_before(project):
    """`Project.status` as it was, grouping every image row in Python."""
    images = project.store.images(project.id)
    labels = project.store.current_labels(project.id)
    split_of = {i["id"]: i["split"] for i in images}
    evaluations = project.store.evaluations(project.id)
    groups = [group for group in copy_groups(images).values() if len(group) > 1]
    name_of = {c["id"]: c["name"] for c in project.class_rows}
    conflicts = []
    for group in groups:
        if len(known_classes(group)) > 1:
            line = " = ".join(f"{i['path']} ({name_of.get(i['known_class_id'], 'no class')})"
                              for i in group)
            if any(i["split"] == "holdout" for i in group):
                line += ": in the hold-out"
            conflicts.append(line)
    return {
        "project": project.name, "root": str(project.root), "backbone": project.features_key,
        "classes": project.class_names, "images": len(images),
        "pool": sum(s == "pool" for s in split_of.values()),
        "holdout": sum(s == "holdout" for s in split_of.values()),
        "skipped": [(i["path"], i["reason"]) for i in project.store.skipped_images(project.id)],
        "duplicates": [[i["path"] for i in group] for group in groups],
        "conflicts": conflicts,
        "labeled_pool": sum(split_of.get(i) == "pool" for i in labels),
        "labeled_holdout": sum(split_of.get(i) == "holdout" for i in labels),
        "model_versions": len(project.store.model_versions(project.id)),
        "accuracy": evaluations[-1]["accuracy"] if evaluations else None,
    }


def test_labels_unlabeled_draw_and_status_read_in_chunks_give_what_every_row_did(
        tmp_path, database, monkeypatch):  # noqa: F811
    # Store rows and a cache of made-up vectors (one per hash, so a wrong image shows): copies
    # of up to 4 files scattered over the ids (so across chunks of 3 rows), some with a labeled
    # copy, one file in two class folders and the hold-out, skipped copies, hashes not cached.
    monkeypatch.setattr(project_module, "PREPARE_CHUNK", 3)
    store = Store(database)
    rng = np.random.default_rng(8)
    for seed in range(4):
        name = f"u{seed}"
        paths = Paths(tmp_path / name, cache_dir=tmp_path / name / "cache")
        pid = store.create_project(name, str(tmp_path), Settings(seed=seed).to_json(), list(CLASSES))
        cat, cow, zebra = (c["id"] for c in store.classes(pid))
        rows = [{"path": f"{k}-{c}.png", "hash": f"h{k}", "split": "pool", "known_class_id": klass}
                for k, (klass, n) in enumerate(zip(rng.choice([cat, cow, zebra, None], 30),
                                                   rng.choice([1, 1, 1, 2, 3, 4], 30)))
                for c in range(n)]
        rows += [{"path": "amb-cat.png", "hash": "amb", "split": "holdout", "known_class_id": cat},
                 {"path": "amb-cow.png", "hash": "amb", "split": "holdout", "known_class_id": cow},
                 {"path": "held.png", "hash": "held", "split": "holdout", "known_class_id": cow},
                 {"path": "bad.png", "hash": "h0", "split": "pool", "status": "skipped",
                  "reason": "broken"}]
        store.add_images(pid, [rows[k] for k in rng.permutation(len(rows))])
        project = Project(store, name, paths)
        hashes = sorted({r["hash"] for r in rows})
        cached = [h for h in hashes if rng.random() < 0.8 or h in ("amb", "held")]
        project.cache.add(cached, rng.normal(size=(len(cached), 4)).astype(np.float32))
        pool = store.images(pid, split="pool")
        labeled = [i for i in pool if i["hash"] in cached and rng.random() < 0.3]
        store.add_labels(pid, [(i["id"], i["known_class_id"] or cat) for i in labeled], "ana", "human")
        store.add_labels(pid, [(i["id"], cow) for i in store.images(pid, split="holdout")],
                         "folder", "imported")
        store.add_labels(pid, [(labeled[0]["id"], None)], "ana", "human")   # a retracted one

        for split in ("pool", "holdout"):
            for new, old in zip(project.labeled(split), labeled_as_before(project, split)):
                np.testing.assert_array_equal(new, old)
        ids = project.labeled("pool")[0]
        for limit in (0, 1, 5, 12, 1000):
            for draw in (0, 3):
                for some in (ids, ids[::2], []):
                    np.testing.assert_array_equal(project.unlabeled_pool(some, limit, seed=draw),
                                                  unlabeled_as_before(project, some, limit, draw))
        assert len(project.unlabeled_pool([], 1000)) < len(pool)           # copies once, uncached out
        status = project.status()
        assert status == status_as_before(project)
        [conflict] = status["conflicts"]
        assert conflict.endswith(": in the hold-out") and sorted(
            conflict.removesuffix(": in the hold-out").split(" = ")) == ["amb-cat.png (Cat)",
                                                                        "amb-cow.png (Cow)"]
        assert len(status["duplicates"]) > 3 and status["labeled_pool"] == len(labeled) - 1


def test_embedding_in_chunks_skips_every_copy_of_a_bad_file_and_reports_one_total(
        tmp_path, demo_folder, paths, monkeypatch):
    root = small_folder(demo_folder, tmp_path / "animals", per_class=3)
    good = next((root / "Zebra").glob("*.png")).read_bytes()
    (root / "Cat" / "a-cut.png").write_bytes(good[: len(good) // 3])     # first of the Cat files
    shutil.copy(root / "Cat" / "a-cut.png", root / "Zebra" / "zz-cut.png")   # last of them all
    monkeypatch.setattr(project_module, "PREPARE_CHUNK", 4)
    handed, fill_cache = [], project_module.fill_cache
    monkeypatch.setattr(project_module, "fill_cache", lambda cache, items, *a, **k: handed.append(
        [p.name for _, p in items]) or fill_cache(cache, items, *a, **k))
    progress = []
    project = create_project(Store(paths.database), "c", root, paths,
                             on_progress=lambda done, total: progress.append((done, total)))
    reasons = dict(project.status()["skipped"])
    assert set(reasons) == {"Cat/a-cut.png", "Zebra/zz-cut.png"}
    assert all("corrupt or truncated" in r for r in reasons.values())
    # Counted once per chunk it sits in (2), decoded once, and the progress ends at its total.
    assert len(handed) == 3 and all(len(items) <= 4 for items in handed)      # 11 files, 4 a chunk
    assert sum(items.count("a-cut.png") + items.count("zz-cut.png") for items in handed) == 1
    assert progress[-1] == (2, 2) and len({t for _, t in progress}) == 1
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_a_retrain_learns_from_unlabeled_pool_images_never_from_the_holdout(tmp_path, demo_folder,
                                                                           paths, monkeypatch):
    from models.heads import SoftmaxHead

    root = small_folder(demo_folder, tmp_path / "animals")
    project = create_project(Store(paths.database), "a", root, paths,
                             settings=Settings(seeds_per_class=1, holdout_fraction=0.3))
    seen = {}
    fit = SoftmaxHead.fit

    def spy(self, X, y, warm_start=None, unlabeled=None, sample_weight=None):
        seen["unlabeled"] = unlabeled
        return fit(self, X, y, warm_start=warm_start, unlabeled=unlabeled, sample_weight=sample_weight)

    monkeypatch.setattr(SoftmaxHead, "fit", spy)
    assert project.retrain(force=True) is not None
    holdout = project.embeddings_of(project.store.images(project.id, split="holdout"))
    _, labeled, _ = project.labeled("pool")
    pool = project.store.images(project.id, split="pool")
    unlabeled = seen["unlabeled"]
    assert len(unlabeled) == len(pool) - len(labeled) > 0
    as_rows = {row.tobytes() for row in unlabeled}
    assert not as_rows & {row.tobytes() for row in holdout}
    assert not as_rows & {row.tobytes() for row in labeled}
    # Past spread_until labels per class, the pool is not even read.
    project.update_settings({"head.spread_until": 0.5})
    project.retrain(force=True)
    assert seen["unlabeled"] is None


def test_each_feature_option_has_its_own_cache_and_is_never_embedded_twice(tmp_path, demo_folder,
                                                                          monkeypatch):
    import models.backbones

    root = small_folder(demo_folder, tmp_path / "animals", per_class=2)
    fresh = Paths(tmp_path / "data", cache_dir=tmp_path / "cache")
    project = create_project(Store(fresh.database), "a", root, fresh)
    hashes = [i["hash"] for i in project.store.images(project.id)]
    base = project.cache.get(hashes)
    assert project.embed(backbone="efficientnet-lite0+flip") == {}
    flipped = project.cache_for("efficientnet-lite0+flip").get(hashes)
    assert flipped.shape == base.shape and not np.allclose(flipped, base)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["efficientnet-lite0",
                                                                     "efficientnet-lite0+flip"]
    np.testing.assert_array_equal(project.cache.get(hashes), base)          # the base cache untouched
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        project.cache_for("nope")
    # Another project on the same images with that option: everything is cached, nothing embedded.
    monkeypatch.setattr(models.backbones, "load_backbone", lambda *a: pytest.fail("embedded again"))
    other = create_project(Store(fresh.database), "b", root, fresh,
                           settings=Settings(backbone="efficientnet-lite0+flip"))
    np.testing.assert_array_equal(other.cache.get(hashes), flipped)


# -- streaming folder import ------------------------------------------------------------------

def walked_as_before(root, classes):
    """The scan before it streamed: os.walk, every listing sorted, hidden names left out."""
    found = []
    for top, label in ([(root / c, c) for c in classes] or [(root, None)]):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                if path.suffix.lower() in IMAGE_SUFFIXES and not filename.startswith("."):
                    found.append((path.relative_to(root).as_posix(), label, None))
    return found


def test_the_streamed_scan_keeps_the_sorted_walk_order_across_spilled_runs(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    root = tmp_path / "animals"
    names = [f"{rng.integers(10**6)}{rng.choice(['', 'a', 'B', 'é', '_'])}.{ext}"
             for ext in rng.choice(["png", "JPG", "txt", "webp"], size=60)]
    for where in ("Cat", "Cat/older", "Cat/older/.cache", "Cat/Zoo", "Cow", ".hidden"):
        (root / where).mkdir(parents=True)
        for name in rng.permutation(names)[:40]:      # created in no particular order
            (root / where / name).touch()
    (root / "Cow" / ".x.png").touch()
    (root / "Cow" / "link").symlink_to(root / "Cat", target_is_directory=True)   # not followed
    monkeypatch.setattr(project_module, "SORT_RUN", 7)    # several runs per folder, merged
    monkeypatch.setattr(project_module, "_RUN_BLOCK", 16)  # and read back a few names at a time
    root = root.resolve()
    for classes in (["Cat", "Cow"], []):
        expected = walked_as_before(root, classes)
        assert len(expected) > 60
        assert list(project_module.walk_folder(root, classes)) == expected


def test_a_scan_holds_a_run_of_names_not_the_whole_folder(tmp_path, monkeypatch):
    # What memory a scan takes is measured by bench/import_speed.py (tracemalloc counts every
    # thread's allocations, and pathlib's interning of names resizes a process-wide table at
    # unpredictable points, so a peak is no test); here, that the listing never holds more than
    # one run of names, and still yields them all, in order.
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in np.random.default_rng(1).permutation(4000):     # created in no particular order
        (flat / f"{i:06d}.png").touch()
    monkeypatch.setattr(project_module, "SORT_RUN", 100)
    spilled = []
    spill = project_module._spill
    monkeypatch.setattr(project_module, "_spill", lambda names: (spilled.append(len(names)),
                                                                 spill(names))[1])
    names = [p for p, _, _ in project_module.walk_folder(flat.resolve())]
    assert spilled == [100] * 40 and names == [f"{i:06d}.png" for i in range(4000)]


def test_an_import_is_stored_in_chunks_and_a_stopped_one_finishes_without_rereading(
        tmp_path, demo_folder, paths, monkeypatch):
    root = small_folder(demo_folder, tmp_path / "animals")
    (root / "Cat" / "empty.png").write_bytes(b"")
    shutil.copy(next((root / "Cat").glob("*.png")), tmp_path / "secret.png")
    (root / "Cow" / "link.png").symlink_to(tmp_path / "secret.png")   # refused while scanning
    monkeypatch.setattr(project_module, "IMPORT_CHUNK", 8)
    store = Store(paths.database)
    chunks = []
    add_images = store.add_images
    monkeypatch.setattr(store, "add_images", lambda pid, rows: (chunks.append(len(rows)),
                                                                add_images(pid, rows))[1])
    hashed = []
    file_hash = project_module.file_hash

    def killed_at_the_21st(path, max_bytes=None):
        hashed.append(path)
        if len(hashed) == 21:
            raise KeyboardInterrupt       # a kill in the middle of the third chunk
        return file_hash(path, max_bytes=max_bytes)

    monkeypatch.setattr(project_module, "file_hash", killed_at_the_21st)
    with pytest.raises(KeyboardInterrupt):
        create_project(store, "animals", root, paths, settings=Settings(seeds_per_class=2))
    assert chunks == [8, 8]                             # one transaction each, and nothing more
    stopped = Project(store, "animals", paths)
    assert len(store.images(stopped.id, status=None)) == 16
    with pytest.raises(ProjectError, match="has not finished"):
        stopped.prepare()                               # no hold-out drawn from half a folder
    with pytest.raises(ProjectError, match="unfinished import of folder"):
        create_project(store, "animals", root, paths, class_names=["a", "b"])

    hashed.clear()
    monkeypatch.setattr(project_module, "file_hash", lambda path, max_bytes=None: (
        hashed.append(path), file_hash(path, max_bytes=max_bytes))[1])
    project = create_project(store, "animals", root, paths)
    assert len(hashed) == 16 - 1          # the 16 files left but the refused link: none stored is read
    assert chunks == [8, 8, 8, 8]                       # 32 files: 30 images, 2 refused
    status = project.status()
    assert status["images"] == 30 and project.store.images(project.id, split="holdout")
    assert dict(status["skipped"]).keys() == {"Cat/empty.png", "Cow/link.png"}

    monkeypatch.setattr(project_module, "file_hash", file_hash)
    again = Paths(tmp_path / "again", cache_dir=paths.cache)
    whole = create_project(Store(again.database), "animals", root, again)   # in one go

    def rows(p):
        names = {c["id"]: c["name"] for c in p.class_rows}
        return [(i["path"], i["hash"], i["status"], i["reason"], names.get(i["known_class_id"]))
                for i in p.store.images(p.id, status=None)]

    assert rows(project) == rows(whole)
    with pytest.raises(ProjectError, match="already exists"):
        create_project(store, "animals", root, paths)
