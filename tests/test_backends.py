"""models/ on the other Keras backends (JAX, PyTorch), where they are installed: the GPU
machines have them and no TensorFlow. Skipped where the backend's package is missing (CI)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

CHECK = """
import io, numpy as np, skimage.data
from PIL import Image
from models.backbones import load_backbone
from models.images import decode_image
from models.heads import SoftmaxHead
buffer = io.BytesIO(); Image.fromarray(skimage.data.chelsea()).save(buffer, "PNG")
probs = load_backbone().classify(decode_image(buffer.getvalue(), 224)[None])[0]
rng = np.random.default_rng(0); y = rng.integers(0, 3, 300)
X = (rng.normal(size=(3, 64))[y] + 0.5 * rng.normal(size=(300, 64))).astype("float32")
head = SoftmaxHead(3, cold_steps=100, warm_steps=20).fit(X, y)
head = SoftmaxHead(3, cold_steps=100, warm_steps=20).fit(X, y, warm_start=head)
print(int(probs.argmax()), round(float(probs.max()), 2), float((head.predict(X) == y).mean()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend, package", [("jax", "jax"), ("torch", "torch")])
def test_backbone_and_head_on_other_backends(backend, package):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed here")
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    top, p, accuracy = result.stdout.split()
    assert top == "285" and abs(float(p) - 0.79) < 0.02 and float(accuracy) > 0.95
