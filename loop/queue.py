"""What to ask people next: pool images chosen by the project's strategy, with hold-out images
(drawn at random when the project was made, never by the strategy) interleaved while the hold-out
set still lacks labels. Each query carries the model's suggestion and which version made it (none for hold-out and audit
images). After every new model version the trainer ranks the next `QUEUE_SIZE` images into the
store (`refresh_queue`), so handing an annotator their next images is a read, not a computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loop import choice
from loop.project import Project
from loop.strategies import needs, pick

QUEUE_SIZE = 200   # images ranked ahead after each version: a few batches for every annotator
# A strategy ranks at most this many unlabeled pool images, drawn at random each time: time and
# memory stay bounded however big the pool (at 100,000 pool images TypiClust took 94 s and 1.9 GiB
# on the whole pool, 28 s and 0.4 GiB on 20,000, covering the pool as well; bench/scale.py).
MAX_CANDIDATES = 20_000


@dataclass
class Query:
    image_id: int
    path: str
    split: str                    # "pool": feeds training; "holdout": feeds scoring only
    origin: str                   # "strategy", "control" (the random slice) or "holdout"
    suggestion: str | None
    confidence: float | None
    model_version: int | None


def next_queries(project: Project, n: int, head=None, model_version: int | None = None,
                 rng: np.random.Generator | None = None, exclude: set[int] = frozenset()) -> list[Query]:
    """Up to `n` unlabeled images to ask about, most wanted first. `head` (default: the latest
    stored version) scores the candidates; `exclude` holds image ids already handed out."""
    rng = rng or np.random.default_rng()
    if head is None:
        head, row = project.current_head()
        model_version = row["version"] if row else None
    labels = project.store.current_labels(project.id)
    audits = {r["image_id"] for r in project.store.audits(project.id)}
    unlabeled = [i for i in project.store.images(project.id)
                 if i["id"] not in labels and i["id"] not in exclude]
    # Audits of auto-accept come first (nothing is accepted before a round is answered; their
    # answers train the model like any label), but take at most half a batch, so the strategy's
    # picks go on. In random order: a round answered in part is then still a random sample.
    waiting = [i for i in unlabeled if i["id"] in audits]
    waiting = [waiting[k] for k in rng.permutation(len(waiting))]
    audit_first = waiting[:max(1, n // 2) if n > 0 else 0]
    unlabeled = [i for i in unlabeled if i["id"] not in audits]
    n -= len(audit_first)
    pool = [i for i in unlabeled if i["split"] == "pool"]
    if len(pool) > MAX_CANDIDATES:
        pool = [pool[k] for k in np.sort(rng.choice(len(pool), MAX_CANDIDATES, replace=False))]
    holdout = [i for i in unlabeled if i["split"] == "holdout"]
    every = project.settings.holdout_every
    n_holdout = min(len(holdout), -(-n // every) if holdout else 0)
    n_pool = min(len(pool), n - n_holdout)
    n_holdout = min(len(holdout), n - n_pool)

    picked_pool = []
    if n_pool:
        name = project.settings.strategy
        if name != "auto" and head is None and name not in ("typiclust", "kcenter", "switch"):
            name = "random"                      # no model: nothing to be unsure of
        # Read what the strategy (for the default: any of its arms) asks for, and each once.
        wanted = {p for arm in (choice.ARMS if name == "auto" else (name,)) for p in needs(arm)}
        pool_X = project.embeddings_of(pool) if head is not None or "embeddings" in wanted else None
        pool_probs = head.predict_proba(pool_X) if head is not None else None
        # A random control slice, marked as such, lets the project's own labels show whether
        # the strategy beats random picking.
        n_control = int(rng.binomial(n_pool, project.settings.control_share))
        control = rng.permutation(len(pool))[:n_control]
        rest = np.setdiff1d(np.arange(len(pool)), control)
        uniform = np.full((len(rest), len(project.class_names)), 1 / len(project.class_names))
        available = {
            "probabilities": uniform if pool_probs is None else pool_probs[rest],
            "n_classes": len(project.class_names),
            "embeddings": pool_X[rest] if "embeddings" in wanted else None,
            "labeled": project.labeled("pool")[1] if "labeled" in wanted else None}
        if name == "auto":
            ranked = chosen_by_arms(project, rest, n_pool - n_control, head is not None, rng, available)
        else:
            ranked = [(int(rest[i]), "strategy") for i in pick(name, n_pool - n_control, rng, **available)]
        picked_pool = [(pool[i], None if pool_probs is None else pool_probs[i], origin)
                       for i, origin in ranked]
        picked_pool += [(pool[i], None if pool_probs is None else pool_probs[i], "control") for i in control]
    # Hold-out images come without a suggestion anywhere: their answers score the model, and a
    # suggestion would anchor them to it.
    picked_holdout = [(holdout[i], None, "holdout") for i in rng.permutation(len(holdout))[:n_holdout]]

    queries: list[Query] = []
    for image in audit_first:   # no suggestion either: the answer measures auto-accept
        queries.append(Query(image["id"], image["path"], image["split"], "audit", None, None, None))
    while picked_pool or picked_holdout:
        position = len(queries) - len(audit_first)
        take_holdout = picked_holdout and (position % every == every - 1 or not picked_pool)
        image, probs, origin = (picked_holdout if take_holdout else picked_pool).pop(0)
        queries.append(Query(
            image_id=image["id"], path=image["path"], split=image["split"], origin=origin,
            suggestion=None if probs is None else project.class_names[int(np.argmax(probs))],
            confidence=None if probs is None else float(np.max(probs)),
            model_version=model_version if probs is not None else None))
    return queries


def chosen_by_arms(project: Project, rest: np.ndarray, n: int, has_model: bool,
                   rng: np.random.Generator, available: dict) -> list[tuple[int, str]]:
    """The default strategy's picks (see loop/choice.py): the batch's slots shared among the arms
    by their measured gain over random, each arm picking its share from the candidates `rest`
    (indices into the pool) the others left; (pool index, "strategy:<arm>"), the arms
    interleaved in proportion so that any first part of the queue keeps the shares."""
    arms = choice.ARMS if has_model else ("typiclust", "random")   # no model: nothing to be unsure of
    current = choice.incumbent(len(available["labeled"]), available["n_classes"], arms)
    shares = choice.allocation(choice.project_gains(project, rng), n, rng, arms=arms, current=current)
    taken: set[int] = set()
    lists = []
    for arm, count in sorted(shares.items(), key=lambda kv: -kv[1]):
        free = np.array([k for k in range(len(rest)) if int(rest[k]) not in taken], dtype=np.int64)
        if not len(free) or not count:
            continue
        sub = {key: (value[free] if key in ("probabilities", "embeddings") else value)
               for key, value in available.items()}
        picks = [int(rest[free[i]]) for i in pick(arm, count, rng, **sub)]
        taken.update(picks)
        lists.append([((k + 0.5) / len(picks), i, choice.PREFIX + arm) for k, i in enumerate(picks)])
    merged = [entry for picks in lists for entry in picks]
    return [(i, origin) for _, i, origin in sorted(merged, key=lambda e: e[0])]


def refresh_queue(project: Project, head=None, model_version: int | None = None,
                  size: int = QUEUE_SIZE, rng: np.random.Generator | None = None,
                  exclude: set[int] = frozenset()) -> int:
    """Rank the next `size` images with the project's strategy (scored by `head`, default the
    newest version), leaving out `exclude` (images people hold now), and store them as the
    project's queue. Returns how many were queued."""
    rng = rng or np.random.default_rng([project.settings.seed, 5, model_version or 0])
    queries = next_queries(project, size, head=head, model_version=model_version, rng=rng,
                           exclude=exclude)
    project.store.replace_queue(project.id, [(q.image_id, q.origin, model_version) for q in queries])
    return len(queries)
