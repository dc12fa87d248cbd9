import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from models.backbones import BACKBONES, imagenet_class_names, load_backbone
from models.images import decode_image


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet-lite0")


def as_input(image, size):
    import io
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return decode_image(buffer.getvalue(), size)[None]


def test_recognises_the_cat_and_the_espresso(lite0):
    cat = lite0.classify(as_input(skimage.data.chelsea(), 224))[0]
    coffee = lite0.classify(as_input(skimage.data.coffee(), 224))[0]
    assert int(cat.argmax()) in {281, 282, 285}
    assert cat[285] == pytest.approx(0.79, abs=0.02)     # the reference network's figure
    assert int(coffee.argmax()) == 967
    assert coffee[967] > 0.85
    assert imagenet_class_names()[967] == "espresso"


def test_embedding_is_the_pooled_feature_vector(lite0):
    batch = np.concatenate([as_input(skimage.data.chelsea(), 224), as_input(skimage.data.coffee(), 224)])
    vectors = lite0.embed(batch)
    assert vectors.shape == (2, 1280) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all() and (vectors >= 0).all()   # after ReLU6 and averaging
    np.testing.assert_allclose(lite0.embed(batch[:1])[0], vectors[0], rtol=1e-4, atol=1e-5)


def test_registry_and_bad_input(lite0):
    assert set(BACKBONES) == {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"}
    with pytest.raises(ValueError, match="unknown backbone 'resnet'.*efficientnet-lite0"):
        load_backbone("resnet")
    with pytest.raises(ValueError, match=r"takes images of shape \(N, 224, 224, 3\)"):
        lite0.embed(np.zeros((1, 100, 100, 3), np.uint8))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet-lite2"])
def test_bigger_lites_build_and_see_a_cat(name):
    backbone = load_backbone(name)
    probs = backbone.classify(as_input(skimage.data.chelsea(), backbone.image_size))[0]
    assert int(probs.argmax()) in {281, 282, 285}


def test_command_line(tmp_path):
    cat = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(cat)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    result = subprocess.run([sys.executable, "-m", "models", str(cat), str(broken)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == str(cat) and len(lines) == 6
    assert lines[1].split()[0] in {"281", "282", "285"}
    assert "broken.jpg" in result.stderr and "not a readable image" in result.stderr
