"""Auto-accept: label the pool images the model is sure enough of, at a precision the lead asks for.

Probabilities are calibrated first by temperature scaling, fitted on out-of-fold predictions of
the labeled TRAINING images (cross-validation; never the hold-out set). The threshold is the lowest
one whose precision on the hold-out set meets the target. A random share of the images it would
accept goes to people instead, as an audit, so the precision it really delivers is measured
beside the one promised. Auto-accepted labels are marked (source "auto"), never touch the
hold-out set, and can be listed and undone.

>>> y = np.array([0, 0, 1, 1]); p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
>>> threshold_for_precision(y, p, 0.99)
0.6
"""

from __future__ import annotations

import json

import numpy as np

from loop.project import Project, load_head

AUDIT_ORIGIN = "audit"
# Auto-accepting more images than this at once asks first (the Rules page, and `--yes` on the
# command line).
CONFIRM_ABOVE = 50


def needs_confirmation(count: int) -> bool:
    return count > CONFIRM_ABOVE


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


def plan(project: Project, target_precision: float) -> dict:
    """Calibrate the latest model and choose its threshold for `target_precision`."""
    from models.heads import SoftmaxHead

    version = project.store.latest_model_version(project.id)
    evaluation = project.store.evaluations(project.id)
    if version is None or not evaluation:
        raise ValueError("auto-accept needs a trained and scored model first")
    _, X, y = project.labeled("pool")
    head = load_head(version["weights_path"])
    config = head.get_config()
    temperature = cross_validated_temperature(X, y, len(project.class_names),
                                              lambda: SoftmaxHead(**config), seed=project.settings.seed)
    ids, class_ids, holdout_probs = project.store.holdout_predictions(evaluation[-1]["id"])
    index_of = {c["id"]: i for i, c in enumerate(project.class_rows)}
    truth = np.array([index_of[c] for c in class_ids])
    calibrated = apply_temperature(holdout_probs, temperature)
    threshold = threshold_for_precision(truth, calibrated, target_precision)
    covered = calibrated.max(1) >= threshold if threshold is not None else np.zeros(len(truth), bool)
    return {"model_version": version["version"], "temperature": temperature, "threshold": threshold,
            "target_precision": target_precision,
            "holdout_coverage": float(covered.mean()),
            "holdout_precision": float((calibrated.argmax(1) == truth)[covered].mean()) if covered.any() else None}


def candidates(project: Project, chosen: dict) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """(free unlabeled pool images, their calibrated probabilities, indices of those at or above
    the planned threshold) for a plan from `plan`."""
    store = project.store
    version = store.latest_model_version(project.id)
    labels = store.current_labels(project.id)
    audited = {r["image_id"] for r in store.audits(project.id)}
    taken = store.taken_image_ids(project.id)
    pool = [i for i in store.images(project.id, split="pool")
            if i["id"] not in labels and i["id"] not in audited and i["id"] not in taken]
    if not pool or chosen["threshold"] is None:
        return pool, np.zeros((len(pool), len(project.class_names))), np.zeros(0, np.int64)
    probs = apply_temperature(load_head(version["weights_path"]).predict_proba(project.embeddings_of(pool)),
                              chosen["temperature"])
    return pool, probs, np.flatnonzero(probs.max(1) >= chosen["threshold"])


def preview(project: Project, target_precision: float, audit_share: float = 0.1) -> dict:
    """What `run` would do now, without doing it: the plan, and how many images it would label
    and how many it would send to people as an audit."""
    chosen = plan(project, target_precision)
    _, _, sure = candidates(project, chosen)
    n_audit = int(round(audit_share * len(sure)))
    return {**chosen, "would_accept": len(sure) - n_audit, "would_audit": n_audit}


def run(project: Project, target_precision: float, audit_share: float = 0.1,
        rng: np.random.Generator | None = None) -> dict:
    """Auto-accept the unlabeled pool images above the planned threshold; a random
    `audit_share` of them is held back for people (recorded in the audit table)."""
    rng = rng or np.random.default_rng()
    chosen = plan(project, target_precision)
    pool, probs, sure = candidates(project, chosen)
    if not len(sure):
        return {**chosen, "accepted": 0, "audited": 0}
    store = project.store
    version = store.latest_model_version(project.id)
    n_audit = int(round(audit_share * len(sure)))
    audit = set(rng.choice(sure, size=n_audit, replace=False).tolist()) if n_audit else set()
    accept = [i for i in sure if i not in audit]
    with store.transaction():
        if accept:
            store.add_labels(project.id, [(pool[i]["id"], project.class_rows[int(probs[i].argmax())]["id"])
                                          for i in accept],
                             annotator=f"auto-v{version['version']}", source="auto",
                             origins=["auto"] * len(accept))
        store.add_audits(project.id, [
            {"image_id": pool[i]["id"], "predicted_class_id": project.class_rows[int(probs[i].argmax())]["id"],
             "model_version": version["version"], "plan": json.dumps(chosen)} for i in audit])
    return {**chosen, "accepted": len(accept), "audited": len(audit)}


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
    every retrain (None: off), the auto-accepted labels in force, and the audit's figures."""
    with project.store.snapshot():
        precision = project.stored_settings().auto_accept_precision
        in_force = len(auto_accepted(project))
        report = audit_report(project)
    return {"precision": precision, "in_force": in_force, **report}


def describe_preview(chosen: dict) -> str:
    """A `preview` in words."""
    if chosen["threshold"] is None:
        return (f"no threshold reaches {chosen['target_precision']:.1%} precision on the hold-out "
                "set yet: nothing would be labeled")
    return (f"threshold {chosen['threshold']:.3f} (temperature {chosen['temperature']:.2f}, model "
            f"v{chosen['model_version']}): it decides {chosen['holdout_coverage']:.0%} of hold-out images "
            f"at {chosen['holdout_precision']:.1%} precision, and would label "
            f"{chosen['would_accept']:,} pool image(s) now (and send {chosen['would_audit']:,} to "
            "people as an audit)")


def describe_state(project: Project) -> str:
    """`state` in words."""
    now = state(project)
    audit = (f"measured precision {now['measured_precision']:.1%} on {now['reviewed']:,} reviewed "
             f"image(s), promised {now['promised_precision']:.1%}" if now["reviewed"] else
             f"{now['audits'] - now['reviewed']:,} audit image(s) waiting for people")
    return (f"auto-accept is {'on at ' + format(now['precision'], '.1%') if now['precision'] else 'off'}; "
            f"{now['in_force']:,} auto-accepted label(s) in force; audit: {audit}")
