"""Labels that are probably wrong. After each retrain, every training label is judged by heads that
never saw it (out-of-fold probabilities: K heads on the cached embeddings, each trained without
one fold), every hold-out label by the newest head (which never trains on the hold-out), and
confident learning (Northcutt, Jiang and Chuang, JAIR 2021; the `cleanlab` package) flags the
likely errors. A reviewer then keeps, changes or flags each suspect; a changed hold-out label
re-scores every stored evaluation from its per-image predictions, so the curve moves in the open.

>>> import numpy as np
>>> y = np.array([0, 0, 0, 1, 1, 1])
>>> probs = np.array([[.9, .1], [.8, .2], [.1, .9], [.2, .8], [.1, .9], [.3, .7]])
>>> ranked(y, probs).tolist()[:1]     # the 0 the model reads as a 1 comes first
[2]
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import numpy as np

from loop.evaluation import evaluate

FOLDS = 5
# A class with fewer training labels than this is not judged: the heads trained without one of
# them would barely know the class, and would call every such label wrong.
MIN_PER_CLASS = 3
TOP_SHARE = 0.05   # the share of judged labels the benchmark and the pages call "the top suspects"


# -- the math: pure functions over numpy arrays -------------------------------------------------

def fold_of(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index of each label, stratified: each class's labels dealt round-robin in a random
    order, so every fold holds about 1/folds of every class.

    >>> fold_of(np.array([0, 0, 0, 0, 1, 1]), 2, 0).tolist().count(0)
    3
    """
    rng = np.random.default_rng([seed, 5])
    fold = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        fold[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)    # the next class starts where this one left off: folds even out
    return fold


def out_of_fold(X: np.ndarray, y: np.ndarray, make_head, folds: int = FOLDS, seed: int = 0
                ) -> np.ndarray:
    """(n, n_classes) probabilities: row i predicted by a head (`make_head()`, fitted on X, y)
    trained on every fold but i's, so no label is judged by a head that learned it."""
    fold = fold_of(y, folds, seed)
    probs = None
    for k in range(folds):
        held = fold == k
        if not held.any() or held.all():
            continue
        head = make_head().fit(X[~held], y[~held])
        p = head.predict_proba(X[held])
        if probs is None:
            probs = np.zeros((len(y), p.shape[1]), np.float32)
        probs[held] = p
    return probs if probs is not None else np.zeros((len(y), 0), np.float32)


def judgeable(y: np.ndarray, n_classes: int, min_per_class: int = MIN_PER_CLASS) -> np.ndarray:
    """Labels whose class has at least `min_per_class` labels."""
    counts = np.bincount(y, minlength=n_classes)
    return counts[y] >= min_per_class


def label_scores(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """How likely each label is under the model: its self-confidence, the probability given to
    the label (cleanlab's `self_confidence`; lowest first = most suspect). It ranked errors best
    of cleanlab's three scores on demo and fashion-mnist with 10% injected noise."""
    from cleanlab.rank import get_label_quality_scores

    return get_label_quality_scores(y, probs, method="self_confidence", adjust_pred_probs=False)


def label_issues(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Confident learning's verdict per label (True: likely wrong), cleanlab's
    `find_label_issues` pruning by the estimated noise rate of each class pair."""
    from cleanlab.filter import find_label_issues

    if len(y) < 2 or len(np.unique(y)) < 2:
        return np.zeros(len(y), bool)
    with warnings.catch_warnings():   # "too few examples in class c": those are judged anyway
        warnings.simplefilter("ignore")
        # n_jobs=1: the work is small, and cleanlab's default forks a worker pool, which from
        # the judge thread while the trainer thread is inside BLAS can hang for good.
        return np.asarray(find_label_issues(y, probs, filter_by="prune_by_noise_rate", n_jobs=1), bool)


def ranked(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices of the labels, most suspect first (lowest self-confidence; ties by index)."""
    return np.lexsort((np.arange(len(y)), label_scores(y, probs)))


def top_count(n: int, share: float = TOP_SHARE) -> int:
    """How many labels "the top `share`" of n is: at least one when there are any.

    >>> top_count(300), top_count(10), top_count(0)
    (15, 1, 0)
    """
    return min(n, max(1, math.ceil(share * n - 1e-9))) if n else 0


# -- judging a project's labels ----------------------------------------------------------------

def behind(project) -> bool:
    """Whether the stored judgement is older than the newest model version (none yet: False)."""
    latest = project.store.latest_model_version(project.id)
    return latest is not None and project.store.suspects_version(project.id) != latest["version"]


def judge(project, folds: int = FOLDS) -> dict | None:
    """Judge every label in force against the newest model version and store the result (see
    `Store.suspects`). Returns {"version", "judged", "issues", "holdout_judged", "holdout_issues",
    "seconds"}, or None before the first version."""
    from models.heads import SoftmaxHead

    store = project.store
    version = store.latest_model_version(project.id)
    if version is None:
        return None
    started = time.perf_counter()
    with store.snapshot():
        events = store.latest_events(project.id)
        ids, X, y = project.labeled("pool")
        evaluations = store.evaluations(project.id)
        holdout = (store.holdout_predictions(evaluations[-1]["id"]) if evaluations
                   else (np.zeros(0, int), np.zeros(0, int), np.zeros((0, 0), np.float32)))
    n_classes = len(project.class_names)
    rows = []
    issues = holdout_issues = 0
    judged = judgeable(y, n_classes) if len(y) else np.zeros(0, bool)
    if judged.sum() >= 2 and len(np.unique(y[judged])) >= 2:
        # Spreading off: a fold's head learns from its labels alone, never from the pool around
        # the label it judges. Its own seed: its own compiled workspace, so it trains beside the
        # retrain instead of waiting for it.
        config = {**dataclasses.asdict(project.settings.head), "spread_neighbors": 0}
        seed = project.settings.seed + 1

        def make_head():
            return SoftmaxHead(n_classes, seed=seed, **config)

        probs = out_of_fold(X[judged], y[judged], make_head, folds, seed=project.settings.seed)
        flagged = label_issues(y[judged], probs)
        issues = int(flagged.sum())
        rows += _rows(project, events, ids[judged], y[judged], probs, flagged, "pool")
    holdout_ids, _, holdout_probs = holdout
    if len(holdout_ids):
        index = project.class_index
        # Scored against the hold-out labels in force now (a review may have changed one since).
        current = {int(i): events[int(i)]["class_id"] for i in holdout_ids if int(i) in events}
        keep = np.array([current.get(int(i)) is not None for i in holdout_ids], bool)
        hy = np.array([index[current[int(i)]] for i in holdout_ids[keep]], dtype=np.int64)
        if len(hy):
            flagged = label_issues(hy, holdout_probs[keep])
            holdout_issues = int(flagged.sum())
            rows += _rows(project, events, holdout_ids[keep], hy, holdout_probs[keep], flagged,
                          "holdout")
    store.replace_suspects(project.id, rows, version["version"])
    return {"version": version["version"], "judged": int(judged.sum()), "issues": issues,
            "holdout_judged": len(holdout_ids), "holdout_issues": holdout_issues,
            "seconds": time.perf_counter() - started}


def _rows(project, events: dict, ids: np.ndarray, y: np.ndarray, probs: np.ndarray,
          flagged: np.ndarray, split: str) -> list[dict]:
    scores = label_scores(y, probs)
    predicted = probs.argmax(1)
    class_id = [c["id"] for c in project.class_rows]
    return [{"image_id": int(i), "split": split, "event_id": events[int(i)]["id"],
             "class_id": class_id[y[j]], "annotator": events[int(i)]["annotator"],
             "source": events[int(i)]["source"], "predicted_class_id": class_id[predicted[j]],
             "p_given": float(probs[j, y[j]]), "p_predicted": float(probs[j, predicted[j]]),
             "score": float(scores[j]), "issue": int(flagged[j])}
            for j, i in enumerate(ids)]


# -- the review ----------------------------------------------------------------------------------

def review(project, image_id: int, reviewer: str, decision: str, class_name: str | None = None,
           event_id: int | None = None) -> dict:
    """A reviewer's decision on the label in force on `image_id` (the event `event_id` they
    saw): "kept", "changed" to `class_name`, or "flagged" (see `Store.review_label`). A changed
    or withdrawn hold-out label re-scores the stored evaluations in the same transaction.
    Returns the review row, with "rescored": the evaluations re-scored."""
    store = project.store
    class_id = store.class_id(project.id, class_name) if decision == "changed" else None
    with store.transaction():
        row = store.review_label(project.id, image_id, reviewer, decision, class_id, event_id)
        row["rescored"] = []
        if row["split"] == "holdout" and row["decision"] != "kept":
            row["rescored"] = rescore(project, image_id, row["class_id"])
    if row["rescored"]:
        names = {c["id"]: c["name"] for c in project.class_rows}
        store.log(project.id, "holdout_rescored",
                  f"{reviewer} {'changed' if row['class_id'] else 'withdrew'} the hold-out label of "
                  f"image {image_id} ({names[row['old_class_id']]}"
                  f"{' to ' + names[row['class_id']] if row['class_id'] else ''}): "
                  f"{len(row['rescored'])} stored evaluation(s) re-scored")
    return row


def rescore(project, image_id: int, class_id: int | None) -> list[int]:
    """Score every stored evaluation that includes hold-out image `image_id` again, from its
    stored per-image predictions, with the image's label now `class_id` (None: left out).
    Returns the evaluation ids re-scored."""
    store = project.store
    index = project.class_index
    with store.transaction():
        store.set_holdout_truth(project.id, image_id, class_id)
        evaluation_ids = store.evaluations_with_image(project.id, image_id)
        for evaluation_id in evaluation_ids:
            _, classes, probs = store.holdout_predictions(evaluation_id)
            if not len(classes):
                continue
            y = np.array([index[c] for c in classes], dtype=np.int64)
            store.update_scores(evaluation_id, evaluate(y, probs, project.class_names))
    return evaluation_ids


def review_queue(project, reviewer: str | None = None, limit: int = 50) -> list[dict]:
    """The open suspects a reviewer works through (hold-out first, then least likely first),
    with class names: "given", "predicted" and their probabilities, who gave the label."""
    names = {c["id"]: c["name"] for c in project.class_rows}
    rows = project.store.suspects(project.id, reviewer=reviewer, limit=limit)
    for row in rows:
        row["given"] = names[row["class_id"]]
        row["predicted"] = names[row["predicted_class_id"]]
    return rows


def suspicion_by_annotator(project) -> list[dict]:
    """Per annotator: labels judged, suspected and the suspected rate; of their labels
    reviewed, the share a review changed or withdrew."""
    rows = project.store.suspicion_by_annotator(project.id)
    for row in rows:
        row["suspected_rate"] = row["suspected"] / row["judged"] if row["judged"] else None
        row["corrected_rate"] = row["corrected"] / row["reviewed"] if row["reviewed"] else None
    return rows
