"""Augmented views, fine-tuning the backbone's top, and the benchmark that judges them."""

import numpy as np
import pytest

from loop.adapt import area_under_curve
from models.augment import augmented_views


def test_views_are_seeded_mild_and_refuse_bad_input():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    views = augmented_views(batch, views=3, seed=5)
    assert views.shape == (3, 4, 48, 48, 3) and views.dtype == np.uint8
    assert (views == augmented_views(batch, views=3, seed=5)).all()          # reproducible
    assert not (views[0] == views[1]).all()                                   # views differ
    assert not (views[0] == batch).all()
    # Mild: a smooth image stays close to itself (a crop or a big turn would not).
    smooth = np.broadcast_to(np.linspace(0, 255, 48, dtype=np.float32)[None, :, None, None],
                             (1, 48, 48, 3)).astype(np.uint8)
    for view in augmented_views(smooth, views=4, seed=0).astype(float):
        assert min(np.abs(view - smooth).mean(), np.abs(view - smooth[:, :, ::-1]).mean()) < 30
    with pytest.raises(ValueError, match="uint8"):
        augmented_views(batch.astype(np.float32), 2)
    with pytest.raises(ValueError, match=r"\(N, S, S, 3\)"):
        augmented_views(batch[0], 2)


def test_area_under_curve_on_known_cases():
    assert area_under_curve((1, 10), [0.5, 0.7]) == pytest.approx(0.6)
    assert area_under_curve((1, 3, 10), [0.8, 0.8, 0.8]) == pytest.approx(0.8)
    # Weighted by log width: 1->3 spans log 3, 3->10 spans log(10/3).
    expected = (np.log(3) * 0.5 + np.log(10 / 3) * 1.0) / np.log(10)
    assert area_under_curve((1, 3, 10), [0.0, 1.0, 1.0]) == pytest.approx(expected)


@pytest.fixture(scope="module")
def split_lite0():
    from models.backbones import BACKBONES, load_backbone
    from models.finetune import split

    backbone = load_backbone("efficientnet-lite0")
    spec = BACKBONES["efficientnet-lite0"]
    return backbone, split(backbone.network, spec.width, spec.depth, 15)


def test_split_network_computes_the_same_features(split_lite0):
    """bottom then top is the whole network (the top is a copy with the same weights)."""
    import skimage.data
    from PIL import Image

    from models.finetune import features

    backbone, (bottom, top) = split_lite0
    images = np.stack([np.asarray(Image.fromarray(skimage.data.chelsea()).resize((224, 224))),
                       np.asarray(Image.fromarray(skimage.data.coffee()).resize((224, 224)))])
    activations = np.asarray(bottom.predict_on_batch(backbone.preprocess(images)))
    assert activations.shape == (2, 7, 7, 192)
    np.testing.assert_allclose(features(top, activations), backbone.embed(images), atol=1e-4)
    assert top.get_layer("_conv_head") is not backbone.network.get_layer("_conv_head")


@pytest.mark.slow
def test_fine_tune_learns_and_leaves_the_original(split_lite0):
    from models.finetune import features, fine_tune

    backbone, (bottom, top) = split_lite0
    rng = np.random.default_rng(0)
    # Two classes of activations that differ a little in a few channels: the tuned top must
    # separate them better than the frozen one does (measured by a centroid margin).
    base = np.abs(rng.normal(size=(40, 7, 7, 192))).astype("float32")
    y = np.array([0, 1] * 20)
    base[y == 1, :, :, :8] += 0.5
    before = [w.copy() for w in top.get_weights()]
    tuned = fine_tune(top, base, y, 2, head_epochs=30, epochs=15, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, top.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(before, tuned.get_weights()))

    def margin(model):
        F = features(model, base)
        F = F / np.linalg.norm(F, axis=1, keepdims=True)
        gap = np.linalg.norm(F[y == 0].mean(0) - F[y == 1].mean(0))
        return gap / (F[y == 0].std(0).mean() + F[y == 1].std(0).mean())

    assert margin(tuned) > margin(top)
    with pytest.raises(ValueError, match="as many labels"):
        fine_tune(top, base, y[:3], 2)


@pytest.mark.slow
def test_benchmark_adapt_command_on_a_small_set(tmp_path, capsys):
    """The command end to end on 400 demo images: every variant scored on the same draws."""
    import json

    from loop.__main__ import main
    from tests.conftest import SHARED_DATA

    assert main(["--data", str(SHARED_DATA), "benchmark-adapt", "--datasets", "demo:40",
                 "--repeats", "1", "--views", "1", "--json"]) == 0
    out = capsys.readouterr().out
    figures = json.loads(out.strip().splitlines()[-1])["demo:40"]
    assert set(figures) == {"frozen", "augment", "fine-tune"}
    for variant in figures.values():
        assert set(variant) == {"acc_at_1pc", "acc_at_3pc", "acc_at_10pc", "auc", "retrain_s"}
        assert 0.1 < variant["acc_at_10pc"] <= 1 and variant["retrain_s"] > 0
        assert min(variant["acc_at_1pc"], variant["acc_at_10pc"]) <= variant["auc"] <= 1
    assert "fine-tune" in out and "auc" in out


def test_a_project_with_views_trains_on_them_and_embeds_each_once(tmp_path, shared_cache, demo_project):
    """augment_views=2: each labeled pool image's two views are embedded on first use, cached
    under "<backbone>@views", and train the head beside it; the counts stay labels, and the
    hold-out is never augmented."""
    from loop.embeddings import EmbeddingCache
    from loop.project import Paths, open_or_create_dataset_project
    from loop.settings import Settings
    from tests.conftest import SHARED_DATA
    from tests.test_study import label_unlabeled

    views_dir = tmp_path / "cache"
    project = open_or_create_dataset_project(
        "demo", Paths(tmp_path / "p", cache_dir=shared_cache), data_dir=SHARED_DATA,
        settings=Settings(augment_views=2))
    project.paths = Paths(tmp_path / "p", cache_dir=views_dir)     # views land in a fresh cache
    label_unlabeled(project, every=40, count=20)
    ids, X, y = project.labeled("pool")
    version = project.retrain()
    assert version["n_labels"] == len(ids) == 30                    # 10 seeds + 20 labels
    views = EmbeddingCache(views_dir, "efficientnet-lite0@views")
    hashes = {i["id"]: i["hash"] for i in project.store.images(project.id)}
    assert not views.missing([f"{hashes[i]}:{v}" for i in ids for v in (0, 1)])
    holdout = project.store.images(project.id, split="holdout")
    assert views.missing([f"{i['hash']}:0" for i in holdout]) == [f"{i['hash']}:0" for i in holdout]
    embedded = project.view_embeddings(ids)
    assert embedded.shape == (2, 30, X.shape[1])
    assert not np.allclose(embedded[0], X) and not np.allclose(embedded[0], embedded[1])
    # Views are close to their image: nearer their own image than any other image's.
    own = np.linalg.norm(embedded[0] - X, axis=1)
    others = np.linalg.norm(embedded[0][:, None] - X[None], axis=2) + np.eye(len(X)) * 1e9
    assert (own < others.min(axis=1)).mean() > 0.8
    shards = len(list((views_dir / "efficientnet-lite0@views").glob("*.npy")))
    label_unlabeled(project, every=40, count=5)
    assert project.retrain()["n_labels"] == 35
    added = len(list((views_dir / "efficientnet-lite0@views").glob("*.npy"))) - shards
    assert added == 2                                # one shard per view, of the 5 new images only
    assert not views.missing([f"{hashes[i]}:1" for i in project.labeled("pool")[0]])


def test_views_setting_is_checked():
    from loop.settings import Settings

    with pytest.raises(ValueError, match="augment_views"):
        Settings(augment_views=-1)
    with pytest.raises(ValueError, match="augment_views"):
        Settings(augment_views=50)
