import os
import shutil
import threading

import numpy as np
import pytest

from loop.project import Paths, Project, ProjectError, create_project
from loop.queue import next_queries
from loop.settings import Settings
from loop.store import Store
from loop.trainer import Trainer

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
