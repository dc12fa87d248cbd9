"""Query strategies: which unlabeled pool images to ask a person about next.

A strategy is a plain function of what it needs (`probabilities` of the candidates, their
`embeddings`, the `labeled` embeddings), `n` and an `rng`, returning indices into the candidates,
most wanted first. Adding one means writing the function and decorating it with `@strategy`;
`pick(name, ...)` hands each function just the arguments it names.

>>> p = np.array([[0.5, 0.5], [0.99, 0.01], [0.6, 0.4]])
>>> margin(p, 2, np.random.default_rng(0)).tolist()
[0, 2]
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import numpy as np

STRATEGIES: dict[str, Callable] = {}
# The strategy a project uses unless told otherwise: the learned choice among strategies
# (loop/choice.py; the queue runs it, as it needs the project's labels and hold-out).
DEFAULT_STRATEGY = "auto"


def strategy(fn: Callable) -> Callable:
    STRATEGIES[fn.__name__] = fn
    return fn


def get_strategy(name: str) -> Callable:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy '{name}'; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def needs(name: str) -> list[str]:
    """What strategy `name` takes besides n and rng (so callers compute only that)."""
    return [p for p in inspect.signature(get_strategy(name)).parameters if p not in ("n", "rng")]


def pick(name: str, n: int, rng: np.random.Generator, **available) -> np.ndarray:
    """Run strategy `name` with the arguments it asks for out of `available`."""
    fn = get_strategy(name)
    wanted = needs(name)
    missing = [p for p in wanted if available.get(p) is None]
    if missing:
        raise ValueError(f"strategy '{name}' needs {', '.join(missing)}")
    candidates = available.get("probabilities", available.get("embeddings"))
    if n <= 0 or candidates is None or not len(candidates):
        return np.zeros(0, np.int64)
    return np.asarray(fn(**{p: available[p] for p in wanted}, n=n, rng=rng), dtype=np.int64)


def _most(scores: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the n highest scores, ties broken at random."""
    return np.lexsort((rng.random(len(scores)), -scores))[:n]


# -- uncertainty -------------------------------------------------------------------------------

@strategy
def random(probabilities: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform picks: the baseline every other strategy must beat."""
    return rng.permutation(len(probabilities))[:n]


@strategy
def least_confidence(probabilities: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Lowest top-class probability first."""
    return _most(1 - probabilities.max(axis=1), n, rng)


@strategy
def margin(probabilities: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Smallest gap between the two most likely classes first."""
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    return _most(-(top2[:, 1] - top2[:, 0]), n, rng)


@strategy
def entropy(probabilities: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Highest predictive entropy first."""
    p = np.clip(probabilities, 1e-12, 1)
    return _most(-(p * np.log(p)).sum(axis=1), n, rng)


# -- diversity and typicality ------------------------------------------------------------------

def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (float32): cosine geometry for the diversity strategies.

    >>> unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0)


def kcenter_greedy(points: np.ndarray, anchors: np.ndarray, n: int) -> np.ndarray:
    """Greedy k-center (core-set): repeatedly take the point farthest from the anchors and
    the points already taken."""
    n = min(n, len(points))
    if n == 0:
        return np.zeros(0, np.int64)
    nearest = (_sq_distances(points, anchors).min(axis=1) if len(anchors)
               else np.full(len(points), np.inf))
    chosen = []
    for _ in range(n):
        if np.isinf(nearest).all():
            i = 0
        else:
            i = int(np.argmax(nearest))
        chosen.append(i)
        nearest = np.minimum(nearest, _sq_distances(points, points[i:i + 1])[:, 0])
        nearest[chosen] = -1
    return np.array(chosen)


@strategy
def kcenter(embeddings: np.ndarray, labeled: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Diversity: the images farthest from everything labeled (core-set, greedy k-center)."""
    return kcenter_greedy(unit_rows(embeddings), unit_rows(labeled) if len(labeled) else
                          np.zeros((0, embeddings.shape[1]), np.float32), n)


@strategy
def hybrid(probabilities: np.ndarray, embeddings: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Uncertainty, then diversity inside the batch (cluster-margin): the 3n smallest-margin
    candidates are clustered into n groups and the most uncertain image of each group is taken,
    so a batch is not n near-copies; no predicted class takes more than half the batch while
    other classes still have candidates, so a rare class is not starved."""
    ranked = margin(probabilities, len(probabilities), rng)
    shortlist = ranked[:3 * n]
    groups = kmeans(unit_rows(embeddings[shortlist]), n, rng) if len(shortlist) > n else np.arange(len(shortlist))
    # shortlist is in margin order, so the first member of each group is its most uncertain.
    _, first = np.unique(groups, return_index=True)
    leaders = shortlist[np.sort(first)]
    predicted = probabilities.argmax(axis=1)
    cap = max(1, -(-n // 2))
    candidates = list(dict.fromkeys([*leaders.tolist(), *ranked.tolist()]))
    taken, per_class = [], {}
    for i in candidates:
        c = int(predicted[i])
        if per_class.get(c, 0) < cap:
            taken.append(int(i))
            per_class[c] = per_class.get(c, 0) + 1
            if len(taken) == n:
                break
    chosen = set(taken)
    taken += [i for i in candidates if i not in chosen][:n - len(taken)]
    return np.array(taken, dtype=np.int64)


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster labels from k-means (scikit-learn's: greedy k-means++ start, then Lloyd steps to
    convergence or at most 50, which bounds a pick's time on a large pool), seeded from `rng` so
    a pick is reproducible."""
    from sklearn.cluster import KMeans

    k = min(k, len(points))
    model = KMeans(n_clusters=k, n_init=1, max_iter=50, random_state=int(rng.integers(2**31 - 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "fewer distinct points than clusters": labels still fine
        return model.fit_predict(np.asarray(points, dtype=np.float32)).astype(np.int64)


@strategy
def typiclust(embeddings: np.ndarray, labeled: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Cold start (TypiClust): cluster everything into (labeled + n) clusters and, from the
    largest clusters that hold no labeled image, take the most typical image (densest: the
    smallest mean distance to its 20 nearest neighbours)."""
    pool = unit_rows(embeddings)
    known = unit_rows(labeled) if len(labeled) else np.zeros((0, pool.shape[1]), np.float32)
    everything = np.concatenate([pool, known])
    clusters = kmeans(everything, len(known) + n, rng)
    pool_clusters, covered = clusters[:len(pool)], set(clusters[len(pool):].tolist())
    sizes = np.bincount(pool_clusters, minlength=clusters.max() + 1)
    order = sorted(range(len(sizes)), key=lambda c: (c in covered, -sizes[c]))
    chosen = []
    for c in order:
        members = np.flatnonzero(pool_clusters == c)
        if not len(members):
            continue
        d = np.sqrt(_sq_distances(pool[members], pool[members]))
        k = min(20, len(members) - 1)
        typicality = 1 / (np.sort(d, axis=1)[:, 1:k + 1].mean(axis=1) + 1e-8) if k else np.ones(1)
        chosen.append(int(members[np.argmax(typicality)]))
        if len(chosen) == n:
            break
    if len(chosen) < n:  # fewer non-empty clusters than asked: fill with k-center picks
        rest = [i for i in kcenter_greedy(pool, np.concatenate([known, pool[chosen]]), n) if i not in chosen]
        chosen += rest[:n - len(chosen)]
    return np.array(chosen, dtype=np.int64)


COLD_START_LABELS_PER_CLASS = 3


@strategy
def switch(probabilities: np.ndarray, embeddings: np.ndarray, labeled: np.ndarray, n_classes: int,
           n: int, rng: np.random.Generator) -> np.ndarray:
    """A fixed switch rule (the default before the learned choice): typical, well-spread images
    (TypiClust) while the model knows almost nothing (fewer than 3 labels per class), then the
    batch-aware hybrid."""
    if len(labeled) < COLD_START_LABELS_PER_CLASS * n_classes:
        return typiclust(embeddings, labeled, n, rng)
    return hybrid(probabilities, embeddings, n, rng)


@strategy
def auto(probabilities: np.ndarray, embeddings: np.ndarray, labeled: np.ndarray, n_classes: int,
         n: int, rng: np.random.Generator) -> np.ndarray:
    """The default, learned per project: the queue shares each batch among typiclust, margin,
    hybrid and random by the gain each measurably brings on the project's own labels
    (loop/choice.py). Called without a project (here), it falls back to the fixed switch rule."""
    return switch(probabilities, embeddings, labeled, n_classes, n, rng)
