"""The hold-out gallery's computations: each model version's predictions on the hold-out images,
filtering them, what changed between two versions (fixed, broken, each version's answer), and a
lead's correction of an image's label. The Gallery panel of the Curve page draws what these return.

    before, after = predictions(project, evaluations[-2]), predictions(project, evaluations[-1])
    diff = compare(before, after)      # diff.fixed, diff.broken: image ids
    print(relabel(project, image_id, "Cat", lead="ana"))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loop.curve import human_labels
from loop.project import Project


@dataclass(frozen=True)
class VersionPredictions:
    """One model version on the hold-out set, sorted by image id: the truth it was scored
    against (class indices), its answer and confidence."""

    version: int
    labels: int             # human labels it was trained on
    image_ids: np.ndarray
    truth: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.truth

    def answer_of(self) -> dict[int, tuple[int, bool]]:
        """{image id: (predicted class index, right?)}."""
        return {int(i): (int(p), bool(c))
                for i, p, c in zip(self.image_ids, self.predicted, self.correct)}


def predictions(project: Project, evaluation: dict) -> VersionPredictions:
    ids, classes, probs = project.store.holdout_predictions(evaluation["id"])
    truth = np.array([project.class_index[c] for c in classes], dtype=int)
    predicted = probs.argmax(1) if len(ids) else np.zeros(0, int)
    confidence = probs.max(1) if len(ids) else np.zeros(0)
    return VersionPredictions(evaluation["version"], human_labels(evaluation), ids, truth,
                              predicted, confidence)


def select(view: VersionPredictions, true_class: int | None = None,
           confidence: tuple[float, float] = (0.0, 1.0), only: set[int] | None = None,
           limit: int = 48) -> np.ndarray:
    """Row indices of `view` to show: of `true_class` (None: all), confidence within the range,
    among the image ids `only` (None: all); wrong answers first, then by image id.

    >>> v = VersionPredictions(1, 10, np.array([5, 6, 7]), np.array([0, 1, 1]),
    ...                        np.array([0, 0, 1]), np.array([0.9, 0.6, 0.8]))
    >>> select(v).tolist(), select(v, true_class=1).tolist(), select(v, confidence=(0.7, 1)).tolist()
    ([1, 0, 2], [1, 2], [0, 2])
    """
    keep = (view.confidence >= confidence[0]) & (view.confidence <= confidence[1])
    if true_class is not None:
        keep &= view.truth == true_class
    if only is not None:
        keep &= np.isin(view.image_ids, list(only))
    rows = np.flatnonzero(keep)
    return rows[np.argsort(view.correct[rows], kind="stable")][:limit]


@dataclass(frozen=True)
class VersionDiff:
    """What changed from `before` to `after` on the hold-out images both scored: `fixed` (wrong,
    then right), `broken` (right, then wrong), `changed` (a different wrong answer), `truth_changed`
    (a lead changed the image's label between the two scorings: judged against each version's
    own truth)."""

    before: int
    after: int
    fixed: list[int]
    broken: list[int]
    changed: list[int]
    unchanged: int
    truth_changed: list[int]

    def sentence(self) -> str:
        parts = [(f"v{self.after} against v{self.before}: {len(self.fixed)} fixed, "
                  f"{len(self.broken)} broken, {len(self.changed)} wrong in a different way, "
                  f"{self.unchanged} unchanged")]
        if self.truth_changed:
            parts.append(f"{len(self.truth_changed)} image(s) had their label changed between the two")
        return "; ".join(parts) + "."


def compare(before: VersionPredictions, after: VersionPredictions) -> VersionDiff:
    """Fixed, broken and changed images between two versions (each judged on its own truth).

    >>> a = VersionPredictions(1, 10, np.array([1, 2, 3]), np.array([0, 1, 1]),
    ...                        np.array([1, 1, 0]), np.ones(3))
    >>> b = VersionPredictions(2, 20, np.array([1, 2, 3]), np.array([0, 1, 1]),
    ...                        np.array([0, 0, 0]), np.ones(3))
    >>> d = compare(a, b); d.fixed, d.broken, d.unchanged
    ([1], [2], 1)
    """
    old, new = before.answer_of(), after.answer_of()
    old_truth = dict(zip(before.image_ids.tolist(), before.truth.tolist()))
    new_truth = dict(zip(after.image_ids.tolist(), after.truth.tolist()))
    fixed, broken, changed, truth_changed, unchanged = [], [], [], [], 0
    for image in sorted(set(old) & set(new)):
        (p0, r0), (p1, r1) = old[image], new[image]
        if old_truth[image] != new_truth[image]:
            truth_changed.append(image)
        if not r0 and r1:
            fixed.append(image)
        elif r0 and not r1:
            broken.append(image)
        elif not r0 and not r1 and p0 != p1:
            changed.append(image)
        else:
            unchanged += 1
    return VersionDiff(before.version, after.version, fixed, broken, changed, unchanged, truth_changed)


def pending_truth(project: Project, view: VersionPredictions) -> dict[int, int]:
    """{image id: class index} for hold-out images whose label in force differs from the truth
    `view` was scored against (a lead corrected it since): it counts from the next evaluation."""
    labels = project.store.current_labels(project.id, split="holdout")
    out = {}
    for image, truth in zip(view.image_ids.tolist(), view.truth.tolist()):
        now = labels.get(image)
        if now is not None and project.class_index[now] != truth:
            out[image] = project.class_index[now]
    return out


def relabel(project: Project, image_id: int, class_name: str, lead: str) -> str:
    """A lead's correction of an image's label: one label event like any other (source
    "review", origin "gallery"), never a rewrite of past scores. Returns what it means."""
    image = project.store.image(project.id, int(image_id))
    current = project.store.current_labels(project.id).get(int(image_id))
    if current is not None and project.class_names[project.class_index[current]] == class_name:
        return f"'{image['path']}' is labeled {class_name} already; nothing changed."
    project.store.add_labels(project.id, [(int(image_id), class_name)], annotator=lead,
                             source="review", origins=["gallery"])
    if image["split"] == "holdout":
        return (f"'{image['path']}' is now labeled {class_name}. It is a hold-out image: the new "
                "label counts from the next evaluation (the trainer retrains within seconds); the "
                "scores of earlier versions keep the label they were measured with.")
    return (f"'{image['path']}' is now labeled {class_name}; the next retrain trains on it.")
