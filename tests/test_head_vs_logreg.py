"""The Keras head against scikit-learn's LogisticRegression on the same real embeddings and split:
hold-out accuracy within 2 points at 1, 3 and 10 labels per class (averaged over five draws, the
same draws for both), and with every pool label."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from models.heads import SoftmaxHead


@pytest.fixture(scope="module")
def demo_embeddings(demo_project):
    images = demo_project.store.images(demo_project.id)
    X = demo_project.embeddings_of(images)
    y = np.array([demo_project.class_index[i["known_class_id"]] for i in images])
    split = np.array([i["split"] for i in images])
    return X[split == "pool"], y[split == "pool"], X[split == "holdout"], y[split == "holdout"]


@pytest.mark.slow
@pytest.mark.parametrize("per_class", [1, 3, 10, None])
def test_head_matches_logistic_regression(demo_embeddings, per_class):
    X, y, X_holdout, y_holdout = demo_embeddings
    ours, theirs = [], []
    for draw in range(5 if per_class else 1):
        rng = np.random.default_rng(draw)
        rows = (np.arange(len(y)) if per_class is None else
                np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                                for c in range(10)]))
        head = SoftmaxHead(10).fit(X[rows], y[rows])
        ours.append(np.mean(head.predict(X_holdout) == y_holdout))
        reference = LogisticRegression(max_iter=2000).fit(X[rows], y[rows])
        theirs.append(np.mean(reference.predict(X_holdout) == y_holdout))
    print(f"{per_class} per class: head {np.mean(ours):.3f}, logistic regression {np.mean(theirs):.3f}")
    assert abs(np.mean(ours) - np.mean(theirs)) <= 0.02
