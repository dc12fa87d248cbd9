import gzip
import pickle

import numpy as np
import pytest

from loop import datasets
from loop.datasets import DATASETS, DatasetError, FASHION_DIR, materialize, parse_name, resolve, subset


@pytest.mark.parametrize("name", ["demo", "mnist5k",
                                  pytest.param("fashion-mnist", marks=pytest.mark.skipif(
                                      not FASHION_DIR.exists(), reason="apt-get install dataset-fashion-mnist"))])
def test_datasets_load_real_images(name):
    images, labels = DATASETS[name].load()
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
    assert sorted(np.unique(labels)) == list(range(10)) and len(images) == len(labels) >= 5000
    assert images.std() > 20   # real pictures, not blank arrays


def test_subset_drops_duplicates_and_balances():
    images = np.zeros((6, 2, 2), np.uint8)
    images[1, 0, 0] = images[4, 0, 0] = 1
    images[5, 0, 0] = 2
    labels = np.array([0, 0, 0, 1, 1, 1])
    picked, picked_labels = subset(images, labels, per_class=5)
    # Distinct pictures: 0 (zeros) and 1 in class 0; in class 1 only image 5 is new.
    assert len(picked) == 3 and picked_labels.tolist() == [0, 0, 1]
    assert len({p.tobytes() for p in picked}) == 3


def test_materialize_writes_a_class_folder_tree_once(tmp_path):
    root = materialize("mnist5k:5", tmp_path)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [str(d) for d in range(10)]
    assert len(list(root.glob("*/*.png"))) == 50
    assert materialize("mnist5k:5", tmp_path) == root and (root / ".complete").exists()


def test_names_and_errors(tmp_path):
    assert parse_name("demo") == ("demo", datasets.DEFAULT_PER_CLASS)
    assert parse_name("demo:50") == ("demo", 50)
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        parse_name("cifar")
    with pytest.raises(DatasetError, match="images per class"):
        parse_name("demo:many")
    with pytest.raises(DatasetError, match="neither a known dataset"):
        resolve(str(tmp_path / "nowhere"), tmp_path)


def test_data_pickles_may_hold_arrays_only(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return os.system, ("echo pwned",)
    path = tmp_path / "evil.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        datasets._NumpyOnlyUnpickler(gzip.open(path)).load()


@pytest.mark.parametrize("name, shape, classes, at_least", [
    ("digits", (8, 8), 10, 1797),
    pytest.param("fashion-tops", (28, 28), 5, 30000, marks=pytest.mark.skipif(
        not FASHION_DIR.exists(), reason="apt-get install dataset-fashion-mnist"))])
def test_other_kinds_of_sets_load(name, shape, classes, at_least):
    """scikit-learn's 8x8 digits (another hand and scanner) and fashion-mnist's five upper-body
    garments (a hard, fine-grained set): more kinds of curves for replays and the forecast."""
    images, labels = DATASETS[name].load()
    assert images.dtype == np.uint8 and images.shape[1:] == shape and len(images) == len(labels) >= at_least
    assert sorted(np.unique(labels)) == list(range(classes)) == list(range(len(DATASETS[name].classes)))
    assert images.max() > 200 and images.std() > 20
