"""Auto-accept: label the pool images the model is sure enough of, at a precision the lead asks
for, and keep that promise on the pool itself.

It works in audit rounds. A round is a random sample of the free pool images whose calibrated
confidence is at least `audit_floor(promise)` (its frame), sent to people without a suggestion.
Once people have answered the whole round, the threshold is the lowest audited confidence at which
the one-sided 95% lower bound on the round's audited precision (Clopper-Pearson) meets the promise
(`threshold_from_audits`); the round's model then labels the rest of its frame above that
threshold, and the next round is drawn from what is left. Nothing is accepted before a round is
answered. The audits are a uniform sample of the very images that would be accepted, so the bound
holds for them; a threshold read off the hold-out set did not carry over to the harder images left
in the pool (0.90-0.92 delivered against 0.95 promised in replays).

Probabilities are calibrated by temperature scaling, fitted on out-of-fold predictions of the
labeled TRAINING images (cross-validation; never the hold-out set). Auto-accepted labels are marked
(source "auto"), never touch the hold-out set, and can be listed and undone.

>>> y = np.array([0, 0, 1, 1]); p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
>>> threshold_for_precision(y, p, 0.99)
0.6
"""

from __future__ import annotations

import json
import math
import uuid

import numpy as np

from loop.project import Project, load_head

AUDIT_ORIGIN = "audit"
# Auto-accepting more images than this at once asks first (the Rules page, and `--yes` on the
# command line).
CONFIRM_ABOVE = 50
CONFIDENCE = 0.95   # of the lower bound on audited precision that must meet the promise
# What a round's rows keep of its draw (every row of a round carries the same; see `_draw`).
ROUND_KEYS = ("round", "target_precision", "temperature", "floor", "frame_size", "last_event_id",
              "max_image_id", "left_out")


def needs_confirmation(count: int) -> bool:
    return count > CONFIRM_ABOVE


# -- the statistics: pure functions over numbers and arrays ---------------------------------------

def clopper_pearson_lower(successes, n, confidence: float = CONFIDENCE):
    """One-sided lower confidence bound on a binomial proportion (Clopper-Pearson, exact): the
    smallest true precision under which `successes` or more right out of `n` would still happen
    with probability 1 - `confidence`. Arrays in, array out.

    >>> round(clopper_pearson_lower(10, 10), 4)          # n of n right: (1 - 0.95) ** (1 / n)
    0.7411
    >>> round(clopper_pearson_lower(7, 10, 0.975), 4)    # the exact 95% interval of 7/10 is [0.3475, 0.9333]
    0.3475
    >>> clopper_pearson_lower(0, 5)
    0.0
    """
    from scipy.stats import beta

    k, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"successes must lie in [0, n] with n >= 1; got {successes} of {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence is a share in (0, 1); got {confidence}")
    bound = np.where(k > 0, beta.ppf(1 - confidence, np.maximum(k, 1), n - k + 1), 0.0)
    return float(bound) if bound.ndim == 0 else bound


def audits_needed(promise: float, confidence: float = CONFIDENCE) -> int:
    """The fewest audited images that could show `promise`: n right out of n bound the precision
    from below by (1 - confidence) ** (1 / n), and fewer cannot reach it however right they are.

    >>> audits_needed(0.95), audits_needed(0.9), audits_needed(0.8)
    (59, 29, 14)
    """
    if not 0 < promise < 1:
        raise ValueError(f"a promised precision is a share in (0, 1); got {promise}")
    n = max(1, math.ceil(math.log(1 - confidence) / math.log(promise)))
    while clopper_pearson_lower(n, n, confidence) < promise:      # float rounding either way
        n += 1
    while n > 1 and clopper_pearson_lower(n - 1, n - 1, confidence) >= promise:
        n -= 1
    return n


def threshold_from_audits(confidences: np.ndarray, correct: np.ndarray, promise: float,
                          confidence: float = CONFIDENCE, min_audits: int | None = None) -> dict:
    """The lowest confidence threshold whose audited images (confidence >= threshold) show
    precision `promise` with a one-sided `confidence` lower bound (Clopper-Pearson), the bound
    meeting it at every higher candidate too.

    Candidates are the audited confidences with at least `min_audits` (default: `audits_needed`)
    audited images at or above them, tried from the highest down; the first whose bound falls
    short ends the descent (fixed-sequence testing). Taking the lowest of all that pass would
    test every threshold at once, and one of them passes by luck far more often than 5% of the
    time. Returns {"threshold" (None: accept nothing), "bound", "audited" and "right" (the audited
    images at or above the threshold, or at the highest candidate when none passes, or all of them
    when there are too few), "needed"}.

    >>> conf = np.arange(100, 0, -1) / 100; right = conf > 0.3       # 1.00 ... 0.01, wrong below 0.31
    >>> chosen = threshold_from_audits(conf, right, 0.9)
    >>> chosen["threshold"], round(chosen["bound"], 3), chosen["audited"], chosen["right"]
    (0.29, 0.915, 72, 70)
    >>> right[0] = False                 # one wrong at the very top ends the descent at once
    >>> threshold_from_audits(conf, right, 0.9)["threshold"] is None
    True
    """
    confidences, correct = np.asarray(confidences, dtype=float), np.asarray(correct, dtype=bool)
    if confidences.shape != correct.shape or confidences.ndim != 1:
        raise ValueError(f"confidences and correct must be two 1-D arrays of one length; got "
                         f"shapes {confidences.shape} and {correct.shape}")
    needed = audits_needed(promise, confidence) if min_audits is None else max(1, int(min_audits))
    order = np.argsort(-confidences, kind="stable")
    sorted_conf, right = confidences[order], np.cumsum(correct[order])
    counted = np.arange(1, len(order) + 1)
    # One candidate per distinct confidence (ties go in together), with enough audits above it.
    ends = np.flatnonzero(np.r_[sorted_conf[1:] != sorted_conf[:-1], True] & (counted >= needed))
    if not len(ends):
        return {"threshold": None, "bound": None, "audited": len(order), "right": int(correct.sum()),
                "needed": needed}
    bounds = clopper_pearson_lower(right[ends], counted[ends], confidence)
    short = np.flatnonzero(bounds < promise)
    last = short[0] - 1 if len(short) else len(ends) - 1
    at = max(last, 0)
    return {"threshold": float(sorted_conf[ends[last]]) if last >= 0 else None,
            "bound": float(bounds[at]), "audited": int(counted[ends[at]]),
            "right": int(right[ends[at]]), "needed": needed}


def audit_floor(promise: float) -> float:
    """The lowest confidence a round samples from, and so the lowest threshold there can be: an
    image whose own calibrated chance of being wrong is over twice the promised error rate is
    left to people.

    >>> audit_floor(0.95)
    0.9
    """
    return round(2 * promise - 1, 12)


def round_size(frame: int, promise: float, audit_share: float) -> int:
    """How many of a round's `frame` images go to people: `audit_share` of them, kept between two
    and four times `audits_needed(promise)` (room for a few errors; not so many that acceptance
    waits long) and at most half the frame (something must be left to accept); 0 if that leaves
    fewer than `audits_needed`.

    >>> round_size(10_000, 0.95, 0.1), round_size(300, 0.95, 0.1), round_size(100, 0.95, 0.1)
    (236, 118, 0)
    """
    needed = audits_needed(promise)
    size = min(frame // 2, int(np.clip(round(audit_share * frame), 2 * needed, 4 * needed)))
    return size if size >= needed else 0


# -- calibration ----------------------------------------------------------------------------------

def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax(log p / T): T > 1 softens over-confident probabilities, T < 1 sharpens."""
    logits = np.log(np.clip(probs, 1e-12, 1)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `y` (a 1-D search on
    log T over [1/20, 20], refined around the best point).

    >>> y = (np.random.default_rng(0).random(4000) < 0.3).astype(int)   # class 0 70% of the time
    >>> calibrated = np.tile([0.7, 0.3], (4000, 1))
    >>> sharp = apply_temperature(calibrated, 0.25)                    # made over-confident
    >>> round(fit_temperature(sharp, y), 1)
    4.0
    """
    def nll(t):
        p = apply_temperature(probs, t)
        return -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 121))
    best = grid[np.argmin([nll(t) for t in grid])]
    fine = np.exp(np.linspace(np.log(best) - 0.06, np.log(best) + 0.06, 41))
    return float(fine[np.argmin([nll(t) for t in fine])])


def cross_validated_temperature(X: np.ndarray, y: np.ndarray, n_classes: int, make_head,
                                folds: int = 5, seed: int = 0) -> float:
    """Temperature fitted on out-of-fold probabilities of the training labels."""
    folds = max(2, min(folds, int(np.bincount(y).max())))
    order = np.random.default_rng(seed).permutation(len(y))
    assignment = np.empty(len(y), int)
    assignment[order] = np.arange(len(y)) % folds
    out_of_fold = np.zeros((len(y), n_classes), np.float32)
    for k in range(folds):
        train, test = assignment != k, assignment == k
        if len(np.unique(y[train])) < 2 or not test.any():
            out_of_fold[test] = 1 / n_classes
            continue
        out_of_fold[test] = make_head().fit(X[train], y[train]).predict_proba(X[test])
    return fit_temperature(out_of_fold, y)


def threshold_for_precision(y: np.ndarray, probs: np.ndarray, target: float) -> float | None:
    """The lowest confidence threshold at which the images accepted (confidence >= threshold)
    are right at least `target` of the time; None if no threshold reaches it."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    meeting = [float(t) for t in np.unique(confidence) if correct[confidence >= t].mean() >= target]
    return min(meeting) if meeting else None


# -- audit rounds ---------------------------------------------------------------------------------

def audit_rounds(project: Project) -> list[dict]:
    """The project's audit rounds, oldest first: the fields of its draw (`ROUND_KEYS`), its
    "model_version", and per audited image "image_ids", "predicted_class_ids", "confidences",
    "reviewed" (people have labeled it, or flagged it as unclear) and "correct" (their label is
    the prediction; a flagged image counts as wrong), plus "closed": an acceptance was made since
    it was drawn, so its frame is spent. Audits drawn before rounds existed are left out."""
    store = project.store
    labels = store.current_labels(project.id)
    flagged = {f["image_id"] for f in store.flags(project.id)}
    last_accepted = max((e["id"] for e in store.label_events(project.id)
                         if e["source"] == "auto" and e["class_id"] is not None), default=0)
    rounds: dict[str, dict] = {}
    for row in store.audits(project.id):
        plan = json.loads(row["plan"])
        if "round" not in plan:
            continue
        r = rounds.setdefault(plan["round"], {**{k: plan[k] for k in ROUND_KEYS},
                                              "model_version": row["model_version"],
                                              "created_at": row["created_at"], "image_ids": [],
                                              "predicted_class_ids": [], "confidences": []})
        r["image_ids"].append(row["image_id"])
        r["predicted_class_ids"].append(row["predicted_class_id"])
        r["confidences"].append(plan["confidence"])
    for r in rounds.values():
        r["confidences"] = np.array(r["confidences"], dtype=float)
        r["reviewed"] = np.array([i in labels or i in flagged for i in r["image_ids"]], dtype=bool)
        r["correct"] = np.array([labels.get(i) == c
                                 for i, c in zip(r["image_ids"], r["predicted_class_ids"])], dtype=bool)
        r["closed"] = last_accepted > r["last_event_id"]
    return sorted(rounds.values(), key=lambda r: (r["last_event_id"], r["created_at"]))


def round_decision(audit_round: dict, promise: float) -> dict:
    """Where one round stands at `promise`: {"model_version", "size", "reviewed", "closed",
    "promise"} and `threshold_from_audits`'s figures once people have answered all of it (until
    then no threshold: which images people answer first is not random)."""
    reviewed = int(audit_round["reviewed"].sum())
    out = {"model_version": audit_round["model_version"], "size": len(audit_round["image_ids"]),
           "reviewed": reviewed, "closed": audit_round["closed"], "promise": promise}
    if reviewed < out["size"]:
        return {**out, "threshold": None, "bound": None, "audited": reviewed,
                "right": int(audit_round["correct"].sum()), "needed": audits_needed(promise)}
    return {**out, **threshold_from_audits(audit_round["confidences"], audit_round["correct"], promise)}


def _version_row(project: Project, version: int) -> dict:
    row = next((v for v in project.store.model_versions(project.id) if v["version"] == version), None)
    if row is None:
        raise ValueError(f"model v{version}, which drew the open audit round, is not stored any more")
    return row


def _free_pool(project: Project, up_to_event: int | None = None) -> tuple[list[dict], set[int]]:
    """(pool images nobody has labeled, audited or holds now, the ids of those someone holds)."""
    store = project.store
    labels = store.current_labels(project.id, up_to_event=up_to_event)
    audited = {r["image_id"] for r in store.audits(project.id)}
    taken = store.taken_image_ids(project.id)
    unlabeled = [i for i in store.images(project.id, split="pool")
                 if i["id"] not in labels and i["id"] not in audited]
    return [i for i in unlabeled if i["id"] not in taken], {i["id"] for i in unlabeled} & taken


def _draw(project: Project, target_precision: float, audit_share: float,
          exclude: set[int] = frozenset()) -> dict:
    """A new round's frame with the newest model (not stored): {"spec" (the `ROUND_KEYS`),
    "images", "probs", "frame" (indices into images), "size", "model_version"}; `exclude` are
    image ids treated as labeled already (a preview's would-be acceptances)."""
    from models.heads import SoftmaxHead

    store = project.store
    version = store.latest_model_version(project.id)
    last_event = store.last_event_id(project.id)
    images, left_out = _free_pool(project, up_to_event=last_event)
    images = [i for i in images if i["id"] not in exclude]
    _, X, y = project.labeled("pool", up_to_event=last_event)
    head = load_head(version["weights_path"])
    config = head.get_config()
    temperature = cross_validated_temperature(X, y, len(project.class_names),
                                              lambda: SoftmaxHead(**config), seed=project.settings.seed)
    probs = (apply_temperature(head.predict_proba(project.embeddings_of(images)), temperature) if images
             else np.zeros((0, len(project.class_names))))
    floor = audit_floor(target_precision)
    frame = np.flatnonzero(probs.max(1) >= floor)
    spec = {"round": uuid.uuid4().hex, "target_precision": target_precision, "temperature": temperature,
            "floor": floor, "frame_size": len(frame), "last_event_id": last_event,
            "max_image_id": max((i["id"] for i in store.images(project.id, split="pool")), default=0),
            "left_out": sorted(left_out)}
    return {"spec": spec, "images": images, "probs": probs, "frame": frame,
            "size": round_size(len(frame), target_precision, audit_share),
            "model_version": version["version"]}


def plan(project: Project, target_precision: float) -> dict:
    """Where auto-accept at `target_precision` stands on the open audit round (the newest one,
    unless an acceptance has spent it). "status" is one of "no round" (the next run draws one),
    "reviewing" (people have not answered all of it), "short" (answered, but no threshold's bound
    meets the promise; a newer model than the round's draws the next one) and "ready" (it would
    accept above "threshold"). With the round's "model_version" and "temperature", the bound's
    figures ("bound", "audited", "right", "audits_needed"), "round_size", "round_reviewed",
    "latest_version", and the hold-out figures of the threshold (for comparison only)."""
    store = project.store
    version = store.latest_model_version(project.id)
    evaluations = store.evaluations(project.id)
    if version is None or not evaluations:
        raise ValueError("auto-accept needs a trained and scored model first")
    rounds = audit_rounds(project)
    chosen = {"status": "no round", "model_version": version["version"], "latest_version": version["version"],
              "temperature": None, "threshold": None, "target_precision": target_precision,
              "bound": None, "audited": 0, "right": 0, "audits_needed": audits_needed(target_precision),
              "round": None, "round_size": 0, "round_reviewed": 0,
              "holdout_coverage": None, "holdout_precision": None}
    if not rounds or rounds[-1]["closed"]:
        return chosen
    current = rounds[-1]
    decided = round_decision(current, target_precision)
    chosen.update(model_version=current["model_version"], temperature=current["temperature"],
                  round=current["round"], round_size=decided["size"], round_reviewed=decided["reviewed"],
                  threshold=decided["threshold"], bound=decided["bound"], audited=decided["audited"],
                  right=decided["right"], audits_needed=decided["needed"])
    if decided["reviewed"] < decided["size"]:
        return {**chosen, "status": "reviewing"}
    if decided["threshold"] is None:
        return {**chosen, "status": "short"}
    evaluation = next((e for e in reversed(evaluations) if e["version"] == current["model_version"]), None)
    if evaluation is not None:
        _, class_ids, holdout_probs = store.holdout_predictions(evaluation["id"])
        if len(class_ids):
            index_of = {c["id"]: i for i, c in enumerate(project.class_rows)}
            truth = np.array([index_of[c] for c in class_ids])
            calibrated = apply_temperature(holdout_probs, current["temperature"])
            covered = calibrated.max(1) >= decided["threshold"]
            chosen["holdout_coverage"] = float(covered.mean())
            chosen["holdout_precision"] = (float((calibrated.argmax(1) == truth)[covered].mean())
                                           if covered.any() else None)
    return {**chosen, "status": "ready"}


def _draws_next(chosen: dict) -> bool:
    """Whether a run on this plan draws a new round (after accepting, if it accepts)."""
    return chosen["status"] in ("no round", "ready") or (
        chosen["status"] == "short" and chosen["latest_version"] > chosen["model_version"])


def candidates(project: Project, chosen: dict) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """(the free pool images of the open round's frame, their calibrated probabilities under the
    round's model, indices of those at or above the planned threshold) for a plan from `plan`.
    Only images the round was drawn from count: the audits speak for them and no others."""
    if chosen["threshold"] is None:
        return [], np.zeros((0, len(project.class_names))), np.zeros(0, np.int64)
    store = project.store
    current = next(r for r in audit_rounds(project) if r["round"] == chosen["round"])
    at_draw = store.current_labels(project.id, up_to_event=current["last_event_id"])
    left_out = set(current["left_out"])
    pool = [i for i in _free_pool(project)[0]
            if i["id"] <= current["max_image_id"] and i["id"] not in at_draw and i["id"] not in left_out]
    if not pool:
        return pool, np.zeros((0, len(project.class_names))), np.zeros(0, np.int64)
    head = load_head(_version_row(project, chosen["model_version"])["weights_path"])
    probs = apply_temperature(head.predict_proba(project.embeddings_of(pool)), chosen["temperature"])
    return pool, probs, np.flatnonzero(probs.max(1) >= chosen["threshold"])


def preview(project: Project, target_precision: float, audit_share: float = 0.1) -> dict:
    """What `run` would do now, without doing it: the plan, how many images it would label
    ("would_accept") and how many it would send to people as the next round ("would_audit")."""
    chosen = plan(project, target_precision)
    accept: set[int] = set()
    if chosen["status"] == "ready":
        pool, _, sure = candidates(project, chosen)
        accept = {pool[i]["id"] for i in sure}
    audit = (_draw(project, target_precision, audit_share, exclude=accept)["size"]
             if _draws_next(chosen) else 0)
    return {**chosen, "would_accept": len(accept), "would_audit": audit}


def run(project: Project, target_precision: float, audit_share: float = 0.1,
        rng: np.random.Generator | None = None) -> dict:
    """Auto-accept the open round's frame above its threshold if people have answered the round
    and its bound meets `target_precision`; then, if the round is spent (or missing, or short of
    the promise with a newer model to try), draw the next one: a uniform random sample of the free
    pool images at or above `audit_floor`, `round_size` of them, recorded in the audit table and
    served to people first. Returns the plan with "accepted" and "audited" (the new round's size)."""
    rng = rng or np.random.default_rng()
    chosen = plan(project, target_precision)
    store = project.store
    accepted = 0
    if chosen["status"] == "ready":
        pool, probs, sure = candidates(project, chosen)
        if len(sure):
            store.add_labels(project.id, [(pool[i]["id"], project.class_rows[int(probs[i].argmax())]["id"])
                                          for i in sure],
                             annotator=f"auto-v{chosen['model_version']}", source="auto",
                             origins=["auto"] * len(sure))
            accepted = len(sure)
    audited = 0
    if _draws_next(chosen):
        draw = _draw(project, target_precision, audit_share)
        if draw["size"]:
            picked = rng.choice(draw["frame"], size=draw["size"], replace=False)
            store.add_audits(project.id, [
                {"image_id": draw["images"][i]["id"],
                 "predicted_class_id": project.class_rows[int(draw["probs"][i].argmax())]["id"],
                 "model_version": draw["model_version"],
                 "plan": json.dumps({**draw["spec"], "confidence": float(draw["probs"][i].max())})}
                for i in sorted(picked.tolist())])
            audited = draw["size"]
    return {**chosen, "accepted": accepted, "audited": audited}


def audit_report(project: Project) -> dict:
    """Measured precision of auto-accept on the audited images people have labeled since."""
    labels = project.store.current_labels(project.id)
    rows = project.store.audits(project.id)
    reviewed = [r for r in rows if r["image_id"] in labels]
    right = sum(labels[r["image_id"]] == r["predicted_class_id"] for r in reviewed)
    promised = [json.loads(r["plan"])["target_precision"] for r in rows]
    return {"audits": len(rows), "reviewed": len(reviewed),
            "measured_precision": right / len(reviewed) if reviewed else None,
            "promised_precision": float(np.mean(promised)) if promised else None}


def auto_accepted(project: Project) -> list[dict]:
    """The auto-accepted labels still in force (for review)."""
    latest: dict[int, dict] = {}
    for event in project.store.label_events(project.id):
        latest[event["image_id"]] = event
    return [e for e in latest.values() if e["source"] == "auto" and e["class_id"] is not None]


def undo(project: Project, image_ids: list[int] | None = None) -> int:
    """Retract auto-accepted labels (all, or those of `image_ids`) with new events."""
    events = auto_accepted(project)
    chosen = [e["image_id"] for e in events if image_ids is None or e["image_id"] in set(image_ids)]
    if chosen:
        project.store.add_labels(project.id, [(i, None) for i in chosen], annotator="undo-auto",
                                 source="auto", origins=["auto"] * len(chosen))
    return len(chosen)


def state(project: Project) -> dict:
    """Where auto-accept stands now, from one read of the store: the precision it runs at after
    every retrain (None: off), the auto-accepted labels in force, the audit's figures, and
    "audit_round": `round_decision` of the newest round at that precision (or at the round's own
    when off), None before the first."""
    with project.store.snapshot():
        precision = project.stored_settings().auto_accept_precision
        in_force = len(auto_accepted(project))
        report = audit_report(project)
        rounds = audit_rounds(project)
    latest = rounds[-1] if rounds else None
    decided = round_decision(latest, precision or latest["target_precision"]) if latest else None
    return {"precision": precision, "in_force": in_force, **report, "audit_round": decided}


def _bound_words(figures: dict, promise: float) -> str:
    """The bound beside the promise, or what it still needs (figures of `threshold_from_audits`
    or `round_decision`, which share their keys)."""
    if figures["bound"] is None:
        return (f"at {promise:.1%} it needs at least {figures['needed']:,} audited images above a "
                f"threshold: {figures['audited']:,} so far")
    where = (f"above threshold {figures['threshold']:.3f}" if figures["threshold"] is not None else
             "above the highest threshold tried")
    return (f"{CONFIDENCE:.0%} lower bound on precision {figures['bound']:.1%} ({figures['right']:,} of "
            f"{figures['audited']:,} audited image(s) right {where}), "
            f"{'promised' if figures['bound'] >= promise else 'short of the'} {promise:.1%}")


def describe_preview(chosen: dict) -> str:
    """A `preview` in words."""
    promise, status = chosen["target_precision"], chosen["status"]
    figures = {"bound": chosen["bound"], "needed": chosen["audits_needed"], "audited": chosen["audited"],
               "right": chosen["right"], "threshold": chosen["threshold"]}
    if status == "ready":
        text = (f"threshold {chosen['threshold']:.3f} (model v{chosen['model_version']}, temperature "
                f"{chosen['temperature']:.2f}): {_bound_words(figures, promise)}")
        if chosen["holdout_coverage"] is not None:
            text += f"; it decides {chosen['holdout_coverage']:.0%} of hold-out images"
    elif status == "reviewing":
        text = (f"no threshold yet: people have answered {chosen['round_reviewed']:,} of the "
                f"{chosen['round_size']:,} audit image(s) of model v{chosen['model_version']} (all are "
                f"needed); {_bound_words(figures, promise)}")
    elif status == "short":
        text = (f"no threshold yet: on the audit of model v{chosen['model_version']}, "
                f"{_bound_words(figures, promise)}")
    else:
        text = f"no audit yet: {_bound_words(figures, promise)}"
    text += f"; it would label {chosen['would_accept']:,} pool image(s) now"
    if chosen["would_audit"]:
        text += (f" and send {chosen['would_audit']:,} to people as an audit (no suggestion shown; "
                 "nothing more is labeled until they have answered all of it)")
    elif _draws_next(chosen):
        text += (f" (an audit needs at least {2 * chosen['audits_needed']:,} free pool images the model "
                 f"is {audit_floor(promise):.0%} sure of)")
    elif status == "short":
        text += " (the next model draws a new audit)"
    return text


def describe_audit(now: dict) -> str:
    """The audit's part of `state` in words: the newest round's bound beside the promise, and the
    precision measured on every audited image people have answered."""
    decided = now["audit_round"]
    if decided is None:
        text = "no audit round yet"
    elif decided["reviewed"] < decided["size"]:
        text = (f"{decided['reviewed']:,} of {decided['size']:,} image(s) of the audit of model "
                f"v{decided['model_version']} answered by people; "
                f"{_bound_words(decided, decided['promise'])}")
    else:
        text = (f"audit of model v{decided['model_version']}{' (spent)' if decided['closed'] else ''}: "
                f"{_bound_words(decided, decided['promise'])}")
    if now["reviewed"]:
        text += (f"; measured precision {now['measured_precision']:.1%} on {now['reviewed']:,} answered "
                 f"audit image(s), promised {now['promised_precision']:.1%}")
    return text


def describe_state(project: Project) -> str:
    """`state` in words."""
    now = state(project)
    return (f"auto-accept is {'on at ' + format(now['precision'], '.1%') if now['precision'] else 'off'}; "
            f"{now['in_force']:,} auto-accepted label(s) in force; audit: {describe_audit(now)}")
