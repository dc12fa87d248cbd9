"""Fine-tuning the backbone's top on a project's labels, as a background job like a retrain.

The top blocks (block `start_block` on) train on the training pool's labels, never the
hold-out's (`models.finetune`: the classifier first, then top and classifier at a fraction of the
head's learning rate, batch norm folded so in inference mode); every image is then embedded again
by the tuned network into a cache of its own key ("<backbone>@tuned-<id>"). The new backbone is
adopted only if a head on it scores better on the hold-out than a head on what the project has,
both trained on the same labels, by more than the hold-out's noise (the paired difference, image
by image, above 1.645 of its standard errors: a one-sided 95% test, so a lucky draw of a few
images does not switch the project); the hold-out is scored, never trained on, as after every
retrain. Adopting publishes the first head on it in the same transaction. A killed job resumes
where it stopped: the tuned weights are kept, images already embedded are skipped.

    python -m loop fine-tune PROJECT [--from-block 15] [--adopt if-better|always|never]

What it buys was measured by `python -m loop benchmark-adapt` (bench/README.md): about a point
on fashion-mnist, nothing on demo, at some 85x a retrain's time on 2 CPU cores. So it is
offered, not run by itself, and only where that time is short: on a GPU, or on a small project.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import numpy as np

from loop.project import Project, ProjectError
from loop.store import StoreError, owner_name

START_BLOCK = 15          # Lite0's last MBConv block (7x7x192 in): the seeds' "top block"
ADOPT = ("if-better", "always", "never")
SMALL_PROJECT = 5_000     # images: re-embedding them all on 2 CPU cores takes about a minute
MAX_TUNE_LABELS = 4_000   # labels the top trains on (a random sample beyond: 37 KB of activations each)
PROGRESS_SECONDS = 2.0    # how often the job writes how far it got (the pages poll it)
Z_ADOPT = 1.645           # one-sided 95%: the gain a tuned backbone must show beyond its noise
STALE_SECONDS = 600       # a job silent this long (no progress written) is taken over


def offered(project: Project) -> tuple[bool, str]:
    """(whether the pages offer fine-tuning now, why or why not, in words)."""
    from models.backbones import BACKBONES
    from models.finetune import gpu_available

    spec = BACKBONES[project.settings.backbone]
    if spec.features != "head":
        return False, (f"backbone '{spec.name}' pools extra features; fine-tuning works on a plain "
                       "backbone's 1,280-d features")
    running = running_job(project)
    if running is not None:
        return False, f"a fine-tuning is running ({progress_text(running)})"
    labels = project.store.current_labels(project.id, split="pool")
    if len(set(labels.values())) < 2:
        return False, "it needs labels of at least two classes in the training pool"
    n = project.store.count_images(project.id)
    if gpu_available():
        return True, f"a GPU is present: the top trains and {n:,} images re-embed on it"
    if n <= SMALL_PROJECT:
        return True, (f"the project is small ({n:,} images): on this CPU the job takes about "
                      f"{_cpu_minutes(n, len(labels))}")
    return False, (f"{n:,} images and no GPU: re-embedding them all on the CPU would take about "
                   f"{_cpu_minutes(n, len(labels))}; run `python -m loop fine-tune` on a "
                   "machine with a GPU")


def _cpu_minutes(images: int, labels: int) -> str:
    """A rough length of the job on 2 CPU cores: about 70 images embedded a second (bench/embed.py,
    twice: the labeled images' activations and every image) and 40 s of training."""
    minutes = max(1, round((images + min(labels, MAX_TUNE_LABELS)) / 70 / 60 + 40 / 60))
    return f"{minutes} minute{'s' * (minutes != 1)}"


def running_job(project: Project) -> dict | None:
    """The project's unfinished fine-tuning job, if any (running, or stopped and resumable)."""
    return next((r for r in reversed(project.store.backbone_versions(project.id))
                 if r["status"] in project.store.UNFINISHED_TUNING), None)


def progress_text(row: dict) -> str:
    if row["status"] == "tuning":
        return f"training the top on {row['n_labels'] or 0:,} labels"
    return f"embedding images, {row['embedded'] or 0:,} of {row['total'] or 0:,}"


def new_job(project: Project, start_block: int = START_BLOCK) -> dict:
    """The row of a new job: its key, base, block, weights file and the labels it will train on
    (those in force now)."""
    base = project.settings.backbone
    key = f"{base}@tuned-{uuid.uuid4().hex[:10]}"
    last_event = project.store.last_event_id(project.id)
    labels = project.store.current_labels(project.id, split="pool", up_to_event=last_event)
    return {"key": key, "base": base, "start_block": int(start_block), "last_event_id": last_event,
            "n_labels": min(len(labels), MAX_TUNE_LABELS),
            "weights_path": str(project.paths.backbones(project.name) / f"{key}.npz")}


def abandoned(row: dict) -> bool:
    """Whether an unfinished job's process is gone (on this host) or silent too long."""
    from loop.store import owner_alive

    return not owner_alive(row["owner"]) or row["updated_at"] < time.time() - STALE_SECONDS


def run(project: Project, start_block: int = START_BLOCK, adopt: str = "if-better",
        owner: str | None = None, head_epochs: int = 100, epochs: int = 20,
        on_progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Fine-tune, embed, compare and maybe adopt; resumes the project's unfinished job if its
    owner is gone. Returns the job's row as stored at the end ("status": "adopted",
    "kept-frozen" or, with `adopt="never"`, "kept-frozen" too). `on_progress(stage, done, total)`.
    A failure marks the job "failed" with the reason and raises."""
    from models.backbones import BACKBONES

    if adopt not in ADOPT:
        raise ValueError(f"adopt must be one of {', '.join(ADOPT)}, got '{adopt}'")
    base = project.settings.backbone
    if BACKBONES[base].features != "head":
        raise ProjectError(offered(project)[1])
    store = project.store
    owner = owner or owner_name("tune")
    row = store.claim_tuning(project.id, owner, new_job(project, start_block))
    try:
        if row["status"] == "tuning":
            _tune(project, row, head_epochs, epochs, on_progress)
            row = store.backbone_version(project.id, row["key"]) | {"owner": owner}
        _embed(project, row, on_progress)
        return _compare_and_adopt(project, store.backbone_version(project.id, row["key"]) | {"owner": owner},
                                  adopt)
    except Exception as exc:
        try:
            store.update_tuning(row["id"], owner, status="failed", finished_at=time.time(),
                                message=f"{type(exc).__name__}: {exc}")
        except StoreError:
            pass   # another process took the job over, or the database is gone: it reports
        raise


def _tune(project: Project, row: dict, head_epochs: int, epochs: int, on_progress) -> None:
    """Train the top on the pool labels in force at the job's start; write its weights."""
    from models.backbones import load_backbone
    from models.extract import embed_files
    from models.finetune import fine_tune, save_top, split

    store = project.store
    labels = store.current_labels(project.id, split="pool", up_to_event=row["last_event_id"])
    ids = np.array(sorted(labels), np.int64)
    if len(set(labels.values())) < 2:
        raise ProjectError("fine-tuning needs labels of at least two classes in the training pool")
    if len(ids) > MAX_TUNE_LABELS:
        rng = np.random.default_rng([project.settings.seed, row["id"], 13])
        ids = np.sort(rng.choice(ids, MAX_TUNE_LABELS, replace=False))
    images = store.images_by_id(project.id, ids)
    started = time.perf_counter()
    base = load_backbone(row["base"])
    bottom, top = split(base.network, base.spec.width, base.spec.depth, row["start_block"])
    shape = tuple(bottom.outputs[0].shape[1:])

    def activations(batch):
        return np.asarray(bottom.predict_on_batch(base.preprocess(batch)), np.float32).reshape(len(batch), -1)

    kept, parts = [], []
    for batch in embed_files([project.root / images[int(i)]["path"] for i in ids], activations,
                             base.image_size, max_pixels=int(project.settings.max_megapixels * 1e6),
                             max_bytes=int(project.settings.max_file_mb * 2**20),
                             on_progress=on_progress and (lambda d, t: on_progress("tuning", d, t))):
        for j, reason in batch.failures.items():    # it embedded before: the file changed since
            store.skip_image(int(ids[j]), reason)
        kept.extend(int(ids[j]) for j in batch.indices)
        if len(batch.indices):
            parts.append(batch.embeddings)
    y = np.array([project.class_index[labels[i]] for i in kept], np.int64)
    if len(set(y.tolist())) < 2:
        raise ProjectError("fine-tuning needs labels of at least two classes in the training pool")
    tuned = fine_tune(top, np.concatenate(parts).reshape(-1, *shape), y, len(project.class_names),
                      head_epochs=head_epochs, epochs=epochs, seed=project.settings.seed)
    save_top(tuned, row["weights_path"])
    store.update_tuning(row["id"], row["owner"], status="embedding", n_labels=len(kept),
                        tune_seconds=time.perf_counter() - started)


def _embed(project: Project, row: dict, on_progress) -> None:
    """Embed every image of the project with the tuned network: `Project.embed` into the tuned
    key's cache (a chunk at a time, cached images skipped, undecodable ones marked skipped). The
    job's row says how far it got, every few seconds, which is also its heartbeat."""
    store = project.store
    total = store.count_images(project.id)
    store.update_tuning(row["id"], row["owner"], total=total)
    started = time.perf_counter()
    reported = [time.monotonic()]

    def progress(done: int, missing: int) -> None:
        embedded = total - missing + done      # the images cached before count as embedded
        if on_progress:
            on_progress("embedding", embedded, total)
        if time.monotonic() - reported[0] > PROGRESS_SECONDS:
            store.update_tuning(row["id"], row["owner"], embedded=embedded)
            reported[0] = time.monotonic()

    project.embed(progress, backbone=row["key"])
    store.update_tuning(row["id"], row["owner"], embedded=total,
                        embed_seconds=(row["embed_seconds"] or 0) + time.perf_counter() - started)


def holdout_correct(project: Project, backbone: str, up_to_event: int) -> np.ndarray | None:
    """Per labeled hold-out image (in id order), whether a fresh head trained on the pool labels up
    to `up_to_event` on `backbone`'s embeddings, as a retrain trains it, gets it right; None
    without hold-out labels or two classes to train on."""
    ids, X, y = project.labeled("pool", up_to_event=up_to_event, backbone=backbone)
    _, X_hold, y_hold = project.labeled("holdout", backbone=backbone)
    if not len(y_hold) or len(np.unique(y)) < 2:
        return None
    head = project.new_head()
    unlabeled = (project.unlabeled_pool(ids, head.spread_max_unlabeled, seed=len(ids), backbone=backbone)
                 if head.wants_unlabeled(y) else None)
    head.fit(X, y, unlabeled=unlabeled)
    return head.predict(X_hold) == y_hold


def paired_gain(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """(mean gain in accuracy, its standard error) of `after` over `before`, image by image.

    >>> paired_gain(np.array([1, 0, 0, 1]), np.array([1, 1, 0, 1]))
    (0.25, 0.25)
    """
    d = np.asarray(after, float) - np.asarray(before, float)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")
    return float(d.mean()), se


def _compare_and_adopt(project: Project, row: dict, adopt: str, wait_seconds: float = 120) -> dict:
    store = project.store
    now_key = project.features_key
    last_event = store.last_event_id(project.id)
    before = holdout_correct(project, now_key, last_event)
    after = holdout_correct(project, row["key"], last_event)
    scored = before is not None and after is not None
    gain, se = paired_gain(before, after) if scored else (0.0, float("inf"))
    store.update_tuning(row["id"], row["owner"], n_holdout=0 if before is None else len(before),
                        holdout_before=before.mean() if scored else None,
                        holdout_after=after.mean() if scored else None)
    better = scored and gain > Z_ADOPT * se
    why = ("the hold-out has no labels to compare on" if not scored else
           f"hold-out accuracy {after.mean():.3f} against {before.mean():.3f} on {now_key} "
           f"({100 * gain:+.1f} +- {100 * se:.1f} points, paired over {len(before)} images)")
    if adopt == "never" or (adopt == "if-better" and not better):
        store.update_tuning(row["id"], row["owner"], status="kept-frozen", finished_at=time.time(),
                            message=("kept as asked: " if adopt == "never" else
                                     "not better beyond the hold-out's noise: ") + why)
    else:
        store.update_tuning(row["id"], row["owner"], message=(
            "better beyond the hold-out's noise: " if better else "adopted as asked: ") + why)
        deadline = time.monotonic() + wait_seconds
        # The retrain takes the training lease for itself; a trainer holding it releases it
        # within a retrain (about a second), so wait for it rather than fail.
        while project.retrain(adopt=row) is None:
            if time.monotonic() > deadline:
                raise ProjectError("could not take the training lease to publish the first head on "
                                   f"the tuned backbone within {wait_seconds:.0f} s")
            time.sleep(0.5)
    return store.backbone_version(project.id, row["key"])


def revert(project: Project) -> dict | None:
    """Go back from the adopted fine-tuned backbone to the one before it (the base backbone, or
    an earlier adopted version); the next retrain trains on it. Returns the row retired, if any."""
    row = project.store.active_backbone(project.id)
    if row is None:
        return None
    project.store.retire_backbone(project.id, row["key"])
    return project.store.backbone_version(project.id, row["key"])
