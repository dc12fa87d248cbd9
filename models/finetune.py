"""Fine-tuning the top of a backbone on a project's labels: the seeds' second stage, and the
tuned backbone it makes (`TunedBackbone`: the frozen bottom, then the tuned top, one network).

The network is split before a named block: the bottom stays frozen and runs once per image (its
output, the activations entering that block, is what fine-tuning trains from), the top (that
block on, to the pooled features) is trained with a softmax classifier on the labeled images:
first the classifier alone at the head's learning rate, then top and classifier together at a
learning rate `lr_ratio` (1/10 to 1/100) of it. Batch norm was folded into the convolutions when
the weights were loaded, so it stays in inference mode by construction (no batch statistics to
drift on a few dozen images). The tuned top then recomputes the features of every image.

>>> import numpy as np
>>> from models.efficientnet_lite import build_top
>>> top = build_top(1.0, 1.0, (7, 7, 192), 15)
>>> tuned = fine_tune(top, np.random.default_rng(0).normal(size=(8, 7, 7, 192)).astype("float32"),
...                   np.array([0, 1] * 4), 2, head_epochs=2, epochs=1)
>>> features(tuned, np.zeros((3, 7, 7, 192), "float32")).shape
(3, 1280)
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import numpy as np

HEAD_LR = 1e-3
LR_RATIO = 0.03          # the top's learning rate is 3% of the head's (the seeds used 1/10-1/100)


def split(network, width: float, depth: float, start_block: int):
    """(bottom, top): `bottom` maps preprocessed images to the activations entering block
    `start_block` (the network's own layers, frozen); `top` is a copy of the rest with the
    network's weights, free to train."""
    import keras

    from models.efficientnet_lite import block_input, build_top

    entering = block_input(network, start_block)
    bottom = keras.Model(network.inputs, entering, name="bottom")
    top = build_top(width, depth, tuple(entering.shape[1:]), start_block)
    for layer in top.layers:
        if layer.weights:
            layer.set_weights(network.get_layer(layer.name).get_weights())
    return bottom, top


def features(top, activations: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, 1280) float32: the top's pooled features of (N, h, w, c) activations."""
    out = [np.asarray(top.predict_on_batch(activations[i:i + batch_size]), np.float32)
           for i in range(0, len(activations), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, top.outputs[0].shape[-1]), np.float32)


def fine_tune(top, activations: np.ndarray, y: np.ndarray, n_classes: int, head_lr: float = HEAD_LR,
              lr_ratio: float = LR_RATIO, head_epochs: int = 100, epochs: int = 20,
              batch_size: int = 32, seed: int = 0):
    """A copy of `top` trained on labeled activations (the argument is left as it was)."""
    import keras

    if len(activations) != len(y) or not len(y):
        raise ValueError(f"fine_tune needs as many labels as activations, got {len(y)} and {len(activations)}")
    keras.utils.set_random_seed(seed)
    tuned = keras.models.clone_model(top)
    tuned.set_weights(top.get_weights())
    y = np.asarray(y, np.int64)
    classifier = keras.layers.Dense(n_classes, name="classifier")
    model = keras.Sequential([tuned, classifier])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # Stage 1: the classifier on the frozen top's features (full batch: a few dozen rows).
    tuned.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(head_lr), loss=loss)
    model.fit(activations, y, epochs=head_epochs, batch_size=len(y), verbose=0)
    # Stage 2: top and classifier together, at a fraction of the head's learning rate.
    tuned.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(head_lr * lr_ratio), loss=loss)
    model.fit(activations, y, epochs=epochs, batch_size=min(batch_size, len(y)), shuffle=True, verbose=0)
    return tuned


def gpu_available() -> bool:
    """Whether Keras' backend sees a GPU (TensorFlow, JAX or PyTorch: each asked its own way)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def save_top(top, path: str | Path) -> Path:
    """Write the top's weights (in layer order, as numpy arrays: backend-agnostic) to `path`
    (.npz), atomically: a killed writer leaves the old file or none, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(staged, "wb") as f:
        np.savez(f, *[np.asarray(w) for w in top.get_weights()])
        f.flush()
        os.fsync(f.fileno())
    staged.replace(path)
    return path


def load_top_weights(path: str | Path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


class TunedBackbone:
    """A backbone whose top (block `start_block` on) carries fine-tuned weights: `embed` takes
    what `Backbone.embed` takes, (N, S, S, 3) uint8 RGB, and runs the frozen bottom and the
    tuned top as one compiled network. Only plain backbones (the 1,280-d pooled features) tune."""

    def __init__(self, base, start_block: int, top_weights: list[np.ndarray], name: str):
        import keras

        if base.spec.features != "head":
            raise ValueError(f"backbone '{base.name}' pools extra features; fine-tune its plain "
                             f"network ('{base.spec.network}') instead")
        self.base = base
        self.spec = base.spec
        self.name = name
        self.image_size = base.image_size
        self.start_block = start_block
        bottom, top = split(base.network, base.spec.width, base.spec.depth, start_block)
        top.set_weights(top_weights)       # refuses weights of another shape, naming the layer
        self.model = keras.Model(bottom.inputs, top(bottom.outputs[0]), name="tuned")
        self.embedding_dim = int(self.model.outputs[0].shape[-1])
        self._lock = threading.Lock()      # one compiled predict function, taken in turn

    def __repr__(self) -> str:
        return f"<TunedBackbone {self.name}: {self.base.name} tuned from block {self.start_block}>"

    def embed(self, batch: np.ndarray) -> np.ndarray:
        batch = self.base._check(batch)
        if not len(batch):
            return np.zeros((0, self.embedding_dim), np.float32)
        with self._lock:
            return np.asarray(self.model.predict_on_batch(self.base.preprocess(batch)), np.float32)
