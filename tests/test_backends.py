"""models/ and the loop on the other Keras backends (JAX, PyTorch), where they are installed: the
GPU machines have them and no TensorFlow. `.ci/run` installs jax's CPU wheel and runs these; torch
(a multi-GB CUDA wheel on PyPI) is checked where a machine has it, skipped with the reason
otherwise."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
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


def _installed(backend: str):
    """The backend as a parameter, skipped (before any fixture runs) where it is not installed."""
    missing = importlib.util.find_spec(backend) is None
    return pytest.param(backend, marks=pytest.mark.skipif(missing, reason=f"{backend} is not installed here"))


OTHER_BACKENDS = [_installed("jax"), _installed("torch")]


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_backbone_and_head_on_other_backends(backend):
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    top, p, accuracy = result.stdout.split()
    assert top == "285" and abs(float(p) - 0.79) < 0.02 and float(accuracy) > 0.95


# Stated tolerances: the same float32 network, reduced in another order by another compiler.
EMBEDDING_ATOL = 1e-4      # measured 1.2e-5 for JAX (features up to about 6)
ACCURACY_POINTS = 0.01     # the head's hold-out accuracy, same labels and seed
REPLAY_POINTS = 0.02       # a replay's last point (a near-tie may pick another query)


def _figures(backend: str, out) -> tuple[np.ndarray, dict]:
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run([sys.executable, "-m", "tests.backend_check", str(out)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((out / "figures.json").read_text())
    assert figures["backend"] == backend
    return np.load(out / "embeddings.npy"), figures


@pytest.fixture(scope="module")
def tensorflow_figures(tmp_path_factory):
    return _figures("tensorflow", tmp_path_factory.mktemp("tensorflow"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_embeddings_head_and_replay_match_tensorflow(backend, tensorflow_figures, tmp_path,
                                                     demo_project):
    """The backbone from image files, the head on cached embeddings and a short replay (strategy,
    background retrains, scoring) give TensorFlow's figures on the other backend."""
    tf_embeddings, tf = tensorflow_figures
    embeddings, other = _figures(backend, tmp_path)
    hashes = (tmp_path / "hashes.txt").read_text().split()
    cached = demo_project.cache.get(hashes)             # what TensorFlow put in the cache
    assert embeddings.shape == tf_embeddings.shape == cached.shape
    assert np.abs(tf_embeddings - cached).max() <= EMBEDDING_ATOL
    assert np.abs(embeddings - tf_embeddings).max() <= EMBEDDING_ATOL
    assert other["n_holdout"] == tf["n_holdout"] >= 300
    assert abs(other["holdout_accuracy"] - tf["holdout_accuracy"]) <= ACCURACY_POINTS
    # Fine-tuning runs there too: the tuned network with the base's weights is the base, and
    # training the top moves its features (the job's two pieces, on this backend).
    assert other["tuned_as_base_max_diff"] <= EMBEDDING_ATOL and other["tuned_finite"]
    assert other["tuned_moved"] > 1e-3
    assert tf["holdout_accuracy"] > 0.8
    assert [n for n, _ in other["replay"]] == [n for n, _ in tf["replay"]]
    assert abs(other["replay"][-1][1] - tf["replay"][-1][1]) <= REPLAY_POINTS
