"""Inter-annotator agreement: how well people agree on the images they labeled on purpose twice.

The math (Cohen's and Fleiss' kappa, specific agreement) is pure functions over numpy arrays; the
rest reads `ratings: {item_id: {rater: class_index}}` and ignores items with fewer than two raters.

>>> ratings = {"a.jpg": {"ana": 0, "bo": 0}, "b.jpg": {"ana": 1, "bo": 1}, "c.jpg": {"ana": 1, "bo": 0}}
>>> [(p["raters"], p["items"], round(p["agreement"], 3), round(p["kappa"], 3)) for p in pairwise(ratings, 2)]
[(('ana', 'bo'), 3, 0.667, 0.4)]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from itertools import combinations

import numpy as np

Ratings = Mapping[Hashable, Mapping[str, int]]


def _chance_corrected(observed: float, expected: float) -> float:
    # When chance agreement is certain (everyone always used one class) kappa is 0/0. Convention:
    # 1.0 if the raters agreed on everything (they did, trivially), else 0.0 (no better than chance).
    if np.isclose(expected, 1.0):
        return 1.0 if np.isclose(observed, 1.0) else 0.0
    return float((observed - expected) / (1.0 - expected))


def cohen_kappa(a, b, n_classes: int) -> float | None:
    """Cohen's kappa of two raters' labels `a`, `b` (class indices 0..n_classes-1) over the same
    items: (p_o - p_e) / (1 - p_e), p_e from each rater's own class shares (scikit-learn's).

    None when there are no items. When p_e is 1 (both raters always gave the same single class)
    kappa is 0/0; this returns 1.0 if observed agreement is 1 (which it then is) and 0.0 otherwise.

    >>> cohen_kappa([0, 0, 1, 1], [0, 1, 1, 1], 2)
    0.5
    >>> cohen_kappa([2, 2], [2, 2], 3), cohen_kappa([], [], 3)
    (1.0, None)
    """
    a, b = _labels(a, n_classes, "a"), _labels(b, n_classes, "b")
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs labels for the same items: a has {len(a)}, b has {len(b)}")
    if len(a) == 0:
        return None
    if len(np.union1d(a, b)) == 1:      # p_e = 1 (0/0): scikit-learn says nan, we say agreed
        return 1.0
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(a, b, labels=np.arange(n_classes)))


def fleiss_kappa(counts) -> float | None:
    """Fleiss' kappa of an (items x categories) matrix: counts[i, j] raters put item i in category j.

    Items may have different numbers of raters n_i (each needs at least 2): per item
    P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)), P = mean P_i, p_j = share of all ratings in j,
    P_e = sum p_j^2, kappa = (P - P_e) / (1 - P_e). None for no items; P_e = 1 (every rating in one
    category) gives 1.0, as in `cohen_kappa`.

    >>> round(fleiss_kappa([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
    ...                     [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
    ...                     [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]), 3)           # Wikipedia's example
    0.21
    """
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise ValueError(f"fleiss_kappa needs an (items x categories) matrix, got shape {counts.shape}")
    if counts.shape[0] == 0:
        return None
    if (counts < 0).any() or not np.array_equal(counts, np.round(counts)):
        raise ValueError("fleiss_kappa needs counts of raters: non-negative whole numbers")
    n = counts.sum(axis=1).astype(float)
    if (n < 2).any():
        row = int(np.argmax(n < 2))
        raise ValueError(f"item {row} has {int(n[row])} rating(s); every item needs at least 2 "
                         "(drop single-rated items first)")
    per_item = ((counts.astype(float) ** 2).sum(axis=1) - n) / (n * (n - 1))
    shares = counts.sum(axis=0) / n.sum()
    return _chance_corrected(float(per_item.mean()), float(shares @ shares))


def specific_agreement(counts) -> np.ndarray:
    """Per category j, specific (positive) agreement over all rater pairs within items:
    2a / (2a + b + c), a = pairs where both said j, b + c = pairs where exactly one did.
    NaN where no pair involves j. `counts` as in `fleiss_kappa`.

    >>> specific_agreement([[2, 0, 0], [1, 1, 0]])      # j=0: a=1, b+c=1; j=1: a=0, b+c=1
    array([0.66666667, 0.        ,        nan])
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2:
        raise ValueError(f"specific_agreement needs an (items x categories) matrix, got shape {counts.shape}")
    n = counts.sum(axis=1, keepdims=True)
    both = (counts * (counts - 1) / 2).sum(axis=0)
    one = (counts * (n - counts)).sum(axis=0)
    denominator = 2 * both + one
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * both / np.where(denominator > 0, denominator, 1), np.nan)


def rated_twice(ratings: Ratings) -> dict:
    """The items with at least two raters, the only ones agreement can speak about."""
    return {item: dict(by) for item, by in ratings.items() if len(by) >= 2}


def count_matrix(ratings: Ratings, n_classes: int) -> tuple[list, np.ndarray]:
    """(item ids, items x classes counts) over the items with at least two raters.

    >>> count_matrix({"x": {"ana": 1, "bo": 1, "cy": 0}, "y": {"ana": 0}}, 2)
    (['x'], array([[1, 2]]))
    """
    items = rated_twice(ratings)
    counts = np.zeros((len(items), n_classes), dtype=int)
    for row, (item, by) in enumerate(items.items()):
        for rater, label in by.items():
            counts[row, _label(label, n_classes, item, rater)] += 1
    return list(items), counts


def pairwise(ratings: Ratings, n_classes: int) -> list[dict]:
    """Per rater pair sharing at least one item: {"raters": (a, b), "items", "agreement", "kappa"},
    agreement being the share of shared items they labeled alike. Pairs in name order."""
    items = rated_twice(ratings)
    shared: dict[tuple, list] = {}
    for item, by in items.items():
        for a, b in combinations(sorted(by), 2):
            shared.setdefault((a, b), []).append((_label(by[a], n_classes, item, a),
                                                  _label(by[b], n_classes, item, b)))
    result = []
    for pair in sorted(shared):
        labels = np.array(shared[pair])
        result.append({"raters": pair, "items": len(labels),
                       "agreement": float(np.mean(labels[:, 0] == labels[:, 1])),
                       "kappa": cohen_kappa(labels[:, 0], labels[:, 1], n_classes)})
    return result


def per_class(ratings: Ratings, n_classes: int) -> list[dict]:
    """Per class: {"class", "items" (items at least one rater put in it), "agreement"} with the
    specific agreement of `specific_agreement` over all rater pairs; None where no pair involves it.

    >>> per_class({"x": {"ana": 0, "bo": 0}, "y": {"ana": 0, "bo": 1}}, 3)[0]
    {'class': 0, 'items': 2, 'agreement': 0.6666666666666666}
    """
    _, counts = count_matrix(ratings, n_classes)
    agreement = specific_agreement(counts)
    involved = (counts > 0).sum(axis=0)
    return [{"class": c, "items": int(involved[c]),
             "agreement": None if np.isnan(agreement[c]) else float(agreement[c])} for c in range(n_classes)]


def majority(labels) -> int | None:
    """The label more than half of `labels` agree on, else None.

    >>> majority([1, 1, 0]), majority([1, 0]), majority([])
    (1, None, None)
    """
    if len(labels) == 0:
        return None
    label, votes = Counter(labels).most_common(1)[0]
    return label if 2 * votes > len(labels) else None


def consensus(ratings: Ratings) -> dict:
    """Per item with at least two raters, the strict-majority label, or None where there is none.

    >>> consensus({"x": {"ana": 2, "bo": 2, "cy": 0}, "y": {"ana": 0, "bo": 1}, "z": {"ana": 1}})
    {'x': 2, 'y': None}
    """
    return {item: majority(list(by.values())) for item, by in rated_twice(ratings).items()}


def against_consensus(ratings: Ratings) -> list[dict]:
    """Per rater, on the items where at least two OTHER raters rated and those others have a strict
    majority: {"rater", "items", "disagreements", "rate"}, rate None when there are no such items.
    Worst first (highest rate, then most disagreements, then name); raters with no such item last.

    >>> ratings = {"x": {"ana": 0, "bo": 0, "cy": 1}, "y": {"ana": 1, "bo": 1, "cy": 1}}
    >>> [(r["rater"], r["items"], r["disagreements"]) for r in against_consensus(ratings)]
    [('cy', 2, 1), ('ana', 1, 0), ('bo', 1, 0)]
    """
    tally: dict[str, list[int]] = {}
    for by in rated_twice(ratings).values():
        for rater, label in by.items():
            seen = tally.setdefault(rater, [0, 0])
            others = [other_label for other, other_label in by.items() if other != rater]
            verdict = majority(others) if len(others) >= 2 else None
            if verdict is not None:
                seen[0] += 1
                seen[1] += int(label != verdict)
    rows = [{"rater": rater, "items": n, "disagreements": d, "rate": d / n if n else None}
            for rater, (n, d) in tally.items()]
    return sorted(rows, key=lambda r: (r["rate"] is None, -(r["rate"] or 0), -r["disagreements"], r["rater"]))


def summary(ratings: Ratings, n_classes: int) -> dict:
    """Everything the lead page shows: {"items", "raters", "fleiss", "pairs", "classes", "worst"}.
    "worst" is the rater with the highest disagreement rate against consensus, or None when nobody
    disagrees with a consensus (naming a "worst" rater at rate 0 would mislead).

    >>> s = summary({"x": {"ana": 0, "bo": 0, "cy": 1}, "y": {"ana": 1, "bo": 1, "cy": 1}}, 2)
    >>> s["items"], s["raters"], round(s["fleiss"], 3), s["worst"]
    (2, 3, 0.25, 'cy')
    """
    items, counts = count_matrix(ratings, n_classes)
    raters = {rater for by in rated_twice(ratings).values() for rater in by}
    ranked = against_consensus(ratings)
    worst = ranked[0]["rater"] if ranked and ranked[0]["disagreements"] > 0 else None
    return {"items": len(items), "raters": len(raters), "fleiss": fleiss_kappa(counts),
            "pairs": pairwise(ratings, n_classes), "classes": per_class(ratings, n_classes), "worst": worst}


def _label(label, n_classes: int, item, rater) -> int:
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < n_classes:
        raise ValueError(f"rater {rater!r} gave item {item!r} class {label!r}; "
                         f"class indices must be whole numbers 0..{n_classes - 1}")
    return int(label)


def _labels(labels, n_classes: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels {name} must be a 1-D array, got shape {labels.shape}")
    if len(labels) and (not np.array_equal(labels, np.round(labels)) or labels.min() < 0
                        or labels.max() >= n_classes):
        raise ValueError(f"labels {name} hold values outside the class indices 0..{n_classes - 1}")
    return labels.astype(int)
