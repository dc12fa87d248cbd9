# ruff: noqa: F811  (the fixtures imported from tests/postgres.py are the tests' parameters)
"""Fine-tuning the backbone as a product job: the tuned network composes as the base does, the
job trains only on pool labels, re-embeds every image under its own key, adopts only what beats
the frozen backbone (or as told), publishes the first head on it with it, resumes after a kill,
refuses a second job, goes back on request, and is offered only where it is cheap."""

import shutil
import socket

import numpy as np
import pytest

from tests.postgres import backend, database, postgres_server  # noqa: F401


@pytest.fixture
def small(tmp_path, shared_cache):
    """demo:12 (120 images, 10 seeds) as a project; the tuned caches it makes are removed after."""
    from loop.project import Paths, open_or_create_dataset_project
    from tests.conftest import SHARED_DATA

    project = open_or_create_dataset_project("demo:12", Paths(tmp_path / "p", cache_dir=shared_cache),
                                             data_dir=SHARED_DATA)
    yield project
    for row in project.store.backbone_versions(project.id):
        shutil.rmtree(shared_cache / row["key"], ignore_errors=True)
        shutil.rmtree(shared_cache / f"{row['key']}@views", ignore_errors=True)


QUICK = {"head_epochs": 5, "epochs": 1}


def test_tuned_backbone_with_the_base_weights_embeds_as_the_base(tmp_path):
    import skimage.data
    from PIL import Image

    from models.backbones import load_backbone
    from models.finetune import TunedBackbone, load_top_weights, save_top, split

    base = load_backbone("efficientnet-lite0")
    _, top = split(base.network, base.spec.width, base.spec.depth, 15)
    path = save_top(top, tmp_path / "top.npz")
    assert not list(tmp_path.glob("*.tmp"))
    tuned = TunedBackbone(base, 15, load_top_weights(path), "efficientnet-lite0@tuned-test")
    images = np.stack([np.asarray(Image.fromarray(skimage.data.chelsea()).resize((224, 224))),
                       np.asarray(Image.fromarray(skimage.data.astronaut()).resize((224, 224)))])
    np.testing.assert_allclose(tuned.embed(images), base.embed(images), atol=1e-4)
    assert tuned.embed(images[:0]).shape == (0, 1280)
    with pytest.raises(ValueError, match="pools extra features"):
        TunedBackbone(load_backbone("efficientnet-lite0+blocks"), 15, [], "x")
    with pytest.raises(ValueError):     # weights of another shape are refused, not half-loaded
        TunedBackbone(base, 14, load_top_weights(path), "y")


def test_the_job_trains_on_pool_labels_embeds_everything_and_adopts_with_its_first_head(
        small, shared_cache, monkeypatch):
    import models.finetune
    from loop import tuning
    from loop.embeddings import EmbeddingCache
    from tests.test_study import label_unlabeled

    label_unlabeled(small, every=6, count=20)
    store = small.store
    pool_labels = store.current_labels(small.id, split="pool")
    holdout = {i["id"] for i in store.images(small.id, split="holdout")}
    assert holdout and store.current_labels(small.id, split="holdout")
    seen = {}
    real_fine_tune, real_by_id = models.finetune.fine_tune, store.images_by_id

    def spy_fine_tune(top, activations, y, *args, **kwargs):
        seen["y"] = np.asarray(y)
        return real_fine_tune(top, activations, y, *args, **kwargs)

    def spy_by_id(project_id, ids):
        seen["ids"] = [int(i) for i in ids]
        return real_by_id(project_id, ids)

    monkeypatch.setattr(models.finetune, "fine_tune", spy_fine_tune)
    monkeypatch.setattr(store, "images_by_id", spy_by_id)
    before = store.latest_model_version(small.id)
    row = tuning.run(small, adopt="always", **QUICK)

    # Trained on the pool's labels, every one, and on no hold-out image.
    assert sorted(seen["ids"]) == sorted(pool_labels) and not holdout & set(seen["ids"])
    assert len(seen["y"]) == len(pool_labels) == row["n_labels"]
    # Every image embedded by the tuned network, under its own key; the base cache untouched.
    images = store.images(small.id)
    assert row["status"] == "adopted" and row["embedded"] == row["total"] == len(images)
    tuned_cache = EmbeddingCache(shared_cache, row["key"])
    assert not tuned_cache.missing([i["hash"] for i in images])
    X_base = small.cache_for("efficientnet-lite0").get([i["hash"] for i in images])
    X_tuned = tuned_cache.get([i["hash"] for i in images])
    assert X_tuned.shape == X_base.shape and not np.allclose(X_tuned, X_base, atol=1e-3)
    # Adopted together with the first head on it, scored on the hold-out with its features.
    assert small.features_key == row["key"] and small.status()["backbone"] == row["key"]
    latest = store.latest_model_version(small.id)
    assert latest["version"] == before["version"] + 1 and latest["backbone"] == row["key"]
    assert latest["n_labels"] == len(pool_labels)
    evaluation = store.evaluations(small.id)[-1]
    assert evaluation["model_version_id"] == latest["id"]
    assert 0 <= row["holdout_before"] <= 1 and 0 <= row["holdout_after"] <= 1
    assert row["n_holdout"] == len(store.current_labels(small.id, split="holdout"))
    # The next retrain trains on it; going back retrains on the base (no warm start across).
    label_unlabeled(small, every=7, count=3)
    assert small.retrain()["backbone"] == row["key"]
    assert tuning.revert(small)["status"] == "retired"
    assert small.features_key == "efficientnet-lite0"
    from loop.trainer import Trainer

    trainer = Trainer(small, start=False, judge_labels=False, rank_queue=False)
    version = trainer.cycle()
    assert version is not None and version["backbone"] == "efficientnet-lite0"
    assert version["n_labels"] == latest["n_labels"] + 3
    assert tuning.revert(small) is None


@pytest.mark.slow
def test_a_job_that_does_not_beat_the_frozen_backbone_is_kept_apart(small, monkeypatch):
    from loop import tuning

    row = tuning.run(small, adopt="never", **QUICK)
    assert row["status"] == "kept-frozen" and row["message"].startswith("kept as asked")
    assert small.features_key == "efficientnet-lite0"
    assert small.store.latest_model_version(small.id)["backbone"] == "efficientnet-lite0"
    # If better, by more than the hold-out's noise: one image more right does not switch.
    n = row["n_holdout"]
    one_more = np.zeros(n, bool), np.r_[True, np.zeros(n - 1, bool)]
    monkeypatch.setattr(tuning, "holdout_correct", lambda p, key, e: one_more[key == row_key[0]])
    row_key = [None]
    real_new_job = tuning.new_job

    def remember(project, start_block=15):
        job = real_new_job(project, start_block)
        row_key[0] = job["key"]
        return job

    monkeypatch.setattr(tuning, "new_job", remember)
    row = tuning.run(small, adopt="if-better", **QUICK)
    assert row["status"] == "kept-frozen" and small.features_key == "efficientnet-lite0"
    assert "not better beyond the hold-out's noise" in row["message"] and f"{100 / n:+.1f} +- {100 / n:.1f} points" in row["message"]
    clearly = np.zeros(n, bool), np.r_[np.ones(n // 2, bool), np.zeros(n - n // 2, bool)]
    monkeypatch.setattr(tuning, "holdout_correct", lambda p, key, e: clearly[key == row_key[0]])
    row = tuning.run(small, adopt="if-better", **QUICK)
    assert row["status"] == "adopted" and small.features_key == row["key"]
    assert row["holdout_after"] == pytest.approx((n // 2) / n) and row["holdout_before"] == 0
    with pytest.raises(ValueError, match="adopt must be"):
        tuning.run(small, adopt="sometimes")


def test_a_killed_job_resumes_where_it_stopped_and_a_live_one_is_not_doubled(small, monkeypatch):
    import models.finetune
    from loop import tuning
    from loop.store import StoreError

    monkeypatch.setattr("loop.project.PREPARE_CHUNK", 50)    # a shard per 50 images embedded

    def killed(stage, done, total):
        if stage == "embedding" and done >= 60:
            raise KeyboardInterrupt    # what a kill looks like to the job: no chance to clean up

    with pytest.raises(KeyboardInterrupt):
        tuning.run(small, adopt="always", on_progress=killed, **QUICK)
    job = tuning.running_job(small)
    assert job["status"] == "embedding" and not tuning.abandoned(job)
    with pytest.raises(StoreError, match="already running"):
        tuning.run(small, **QUICK)                      # its owner (this process) still lives
    ok, why = tuning.offered(small)
    assert not ok and "running" in why
    dead = f"{socket.gethostname()}:999999999:tune-gone"
    small.store.db.execute("UPDATE backbone_versions SET owner = ? WHERE id = ?", [dead, job["id"]])
    assert tuning.abandoned(tuning.running_job(small))
    cache = small.cache_for(job["key"])
    embedded_before = len(small.store.images(small.id)) - len(
        cache.missing([i["hash"] for i in small.store.images(small.id)]))
    assert 50 <= embedded_before < len(small.store.images(small.id))   # whole shards survived
    embedded = []
    monkeypatch.setattr(models.finetune, "fine_tune", lambda *a, **k: pytest.fail("tuned twice"))
    row = tuning.run(small, adopt="always",
                     on_progress=lambda stage, done, total: embedded.append(done), **QUICK)
    assert row["key"] == job["key"] and row["status"] == "adopted"
    assert row["embedded"] == row["total"] == len(small.store.images(small.id))
    assert max(embedded) == row["total"]       # the progress counts every image, cached or not


def test_offered_where_it_is_cheap_and_never_without_two_classes(small, monkeypatch):
    from loop import tuning

    ok, why = tuning.offered(small)
    assert ok and "small (120 images)" in why and "minute" in why
    monkeypatch.setattr(tuning, "SMALL_PROJECT", 100)
    ok, why = tuning.offered(small)
    assert not ok and "no GPU" in why and "python -m loop fine-tune" in why
    monkeypatch.setattr("models.finetune.gpu_available", lambda: True)
    assert tuning.offered(small) == (True, "a GPU is present: the top trains and 120 images re-embed on it")
    one_class = small.store.current_labels(small.id, split="pool")
    first = next(iter(one_class.values()))
    small.store.add_labels(small.id, [(i, None) for i, c in one_class.items() if c != first],
                           annotator="lead", source="human")
    ok, why = tuning.offered(small)
    assert not ok and "two classes" in why


@pytest.mark.slow
def test_the_trainer_runs_it_in_the_background_and_the_command_line_lists_and_reverts(
        small, capsys):
    from loop.__main__ import main
    from loop.trainer import Trainer

    trainer = Trainer(small, judge_labels=False, rank_queue=False)
    try:
        thread = trainer.fine_tune(adopt="always", **QUICK)
        assert thread.is_alive()               # returned at once; the job runs on its worker
        assert trainer.wait_tuned(timeout=300) and not trainer.tune_errors
        assert trainer.tunings[0]["status"] == "adopted"
        assert trainer.wait(timeout=60)
        assert small.store.latest_model_version(small.id)["backbone"] == trainer.tunings[0]["key"]
    finally:
        trainer.close()
    data = ["--data", str(small.paths.root)]
    assert main([*data, "fine-tune", small.name, "--list"]) == 0
    out = capsys.readouterr().out
    assert f"{trainer.tunings[0]['key']}: adopted" in out and "heads train on: " + trainer.tunings[0]["key"] in out
    assert main([*data, "fine-tune", small.name, "--revert"]) == 0
    assert "retired; heads train on efficientnet-lite0" in capsys.readouterr().out
    assert main([*data, "fine-tune", small.name, "--revert"]) == 1


def test_the_store_keeps_one_job_at_a_time_on_both_databases(database):
    from loop.store import Store, StoreError

    store = Store(database)
    project_id = store.create_project("p", "/x", "{}", ["a", "b"])
    alive = f"{socket.gethostname()}:1:tune-init"       # pid 1 exists wherever this runs
    row = store.claim_tuning(project_id, alive, {"key": "k1", "base": "b", "start_block": 15})
    assert not row["resumed"] and row["status"] == "tuning"
    store.update_tuning(row["id"], alive, status="embedding", total=10, embedded=4)
    with pytest.raises(StoreError, match="already running.*4 of 10"):
        store.claim_tuning(project_id, "other:2:tune", {"key": "k2", "base": "b", "start_block": 15})
    with pytest.raises(StoreError, match="no longer run by"):
        store.update_tuning(row["id"], "other:2:tune", embedded=5)
    # Silent for longer than the stale limit: taken over, resumed, and the old owner is refused.
    taken = store.claim_tuning(project_id, "other:2:tune", {"key": "k2"}, stale_seconds=0)
    assert taken["resumed"] and taken["key"] == "k1" and taken["status"] == "embedding"
    with pytest.raises(StoreError, match="no longer run by"):
        store.update_tuning(row["id"], alive, embedded=6)
    assert store.active_backbone(project_id) is None
    store.update_tuning(row["id"], "other:2:tune", status="adopted", finished_at=1.0)
    assert store.active_backbone(project_id)["key"] == "k1"
    store.retire_backbone(project_id, "k1")
    assert store.active_backbone(project_id) is None
    assert [r["status"] for r in store.backbone_versions(project_id)] == ["retired"]


def test_images_added_after_adoption_are_embedded_by_the_tuned_network(tmp_path, demo_project,
                                                                        shared_cache):
    from PIL import Image

    from loop import tuning
    from loop.project import Paths, create_project
    from loop.settings import Settings
    from loop.store import Store
    from models.images import file_hash, load_image
    from tests.test_project import small_folder

    folder = small_folder(demo_project.root, tmp_path / "animals", per_class=8)
    project = create_project(Store(tmp_path / "juicer.db"), "animals", folder,
                             Paths(tmp_path, cache_dir=shared_cache),
                             settings=Settings(seeds_per_class=3, holdout_fraction=0.3))
    try:
        row = tuning.run(project, adopt="always", **QUICK)
        assert project.features_key == row["key"]
        # A new file arrives after adoption (a slightly changed copy: new content, new hash).
        source = next((folder / project.class_names[0]).glob("*.png"))
        pixels = np.asarray(Image.open(source).convert("RGB")).copy()
        pixels[0, 0] = 255 - pixels[0, 0]
        Image.fromarray(pixels).save(folder / project.class_names[0] / "new.png")
        new = folder / project.class_names[0] / "new.png"
        project.store.add_images(project.id, [{"path": f"{project.class_names[0]}/new.png",
                                               "hash": file_hash(new), "split": "pool",
                                               "known_class_id": project.class_rows[0]["id"]}])
        assert project.embed() == {}
        network = project.network()
        image = load_image(new, network.image_size)[None]
        stored = project.cache.get([file_hash(new)])
        np.testing.assert_allclose(stored, network.embed(image), atol=1e-5)
        assert not np.allclose(stored, project.network("efficientnet-lite0").embed(image), atol=1e-3)
        assert project.cache_for("efficientnet-lite0").missing([file_hash(new)])   # base untouched
    finally:
        for job in project.store.backbone_versions(project.id):
            shutil.rmtree(shared_cache / job["key"], ignore_errors=True)
