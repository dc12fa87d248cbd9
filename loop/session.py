"""One annotator's labeling session: the images leased to them, answers kept as drafts in the
database until the batch is submitted (one transaction), undo, and a retrain in the background
after each batch. The browser page is a thin shell over this class.

    session = LabelingSession(project, "ana", trainer)
    item = session.current()          # image, suggestion, confidence, model version
    session.answer("Cow")             # or session.answer(None) to skip; session.undo()
    session.submit()                  # also done by itself every `batch_size` answers
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from loop.project import Project
from loop.queue import next_queries
from loop.store import StoreError
from loop.trainer import Trainer

_heads: dict[str, object] = {}
_heads_lock = threading.Lock()


def load_head(weights_path: str):
    """A stored head version, loaded once per process (versions never change once written)."""
    from models.heads import SoftmaxHead

    with _heads_lock:
        if weights_path not in _heads:
            _heads[weights_path] = SoftmaxHead.load(weights_path)
        return _heads[weights_path]


@dataclass
class Item:
    image_id: int
    path: str
    split: str                      # "holdout" images are scored, never trained on
    origin: str | None              # why it was asked: strategy, control, holdout, audit, grid
    suggestion: str | None          # None for hold-out images: no anchoring of scoring labels
    confidence: float | None
    model_version: int | None
    probabilities: list[float] | None


class LabelingSession:
    def __init__(self, project: Project, annotator: str, trainer: Trainer | None = None,
                 batch_size: int | None = None, lease_seconds: float = 900, prefetch: int = 10):
        annotator = (annotator or "").strip()
        if not annotator:
            raise StoreError("name yourself first: every label records who gave it")
        self.project = project
        self.annotator = annotator
        self.trainer = trainer
        self.batch_size = batch_size or project.settings.batch_size
        self.lease_seconds = lease_seconds
        self.prefetch = prefetch

    # -- the queue --------------------------------------------------------------------------

    def _open_leases(self) -> list[int]:
        drafted = {d["image_id"] for d in self.project.store.drafts(self.project.id, self.annotator)}
        labeled = self.project.store.current_labels(self.project.id)
        return [lease["image_id"] for lease in self.project.store.leases(self.project.id, self.annotator)
                if lease["image_id"] not in drafted and lease["image_id"] not in labeled]

    def _refill(self) -> None:
        store = self.project.store
        taken = {lease["image_id"] for lease in store.leases(self.project.id)}
        taken |= {d["image_id"] for d in store.db.query(
            "SELECT image_id FROM drafts WHERE project_id = ?", [self.project.id])}
        queries = next_queries(self.project, self.prefetch, exclude=taken)
        store.lease(self.project.id, [q.image_id for q in queries], self.annotator, self.lease_seconds,
                    origins=[q.origin for q in queries])

    def latest_version(self) -> dict | None:
        return self.project.store.latest_model_version(self.project.id)

    def current(self) -> Item | None:
        """The next image for this annotator (leased to them), scored by the newest model."""
        open_ids = self._open_leases()
        if not open_ids:
            self._refill()
            open_ids = self._open_leases()
        if not open_ids:
            return None
        image = self.project.store.db["images"].get(open_ids[0])
        lease = next(lease for lease in self.project.store.leases(self.project.id, self.annotator)
                     if lease["image_id"] == open_ids[0])
        return self.describe(image, origin=lease["origin"])

    def describe(self, image: dict, origin: str | None = None) -> Item:
        version = self.latest_version()
        probs = None
        if version is not None:
            head = load_head(version["weights_path"])
            probs = head.predict_proba(self.project.embeddings_of([image]))[0]
        # No suggestion where the answer scores the model: hold-out images and audits of
        # auto-accept, so the person is not anchored by what is being measured.
        show = probs is not None and image["split"] != "holdout" and origin != "audit"
        return Item(image_id=image["id"], path=image["path"], split=image["split"], origin=origin,
                    suggestion=self.project.class_names[int(np.argmax(probs))] if show else None,
                    confidence=float(np.max(probs)) if show else None,
                    model_version=version["version"] if show else None,
                    probabilities=probs.tolist() if show else None)

    # -- answers ------------------------------------------------------------------------------

    def answer(self, image_id: int, class_name: str | None) -> bool:
        """Record an answer for `image_id` (None: skip). Returns True if it completed a batch,
        which is then submitted. Answers are drafts in the database until submitted."""
        leased = {lease["image_id"] for lease in self.project.store.leases(self.project.id, self.annotator)}
        if image_id not in leased:
            # Lease expired and someone else may hold it now; take it back only if it is free.
            if not self.project.store.lease(self.project.id, [image_id], self.annotator, self.lease_seconds):
                raise StoreError(f"image {image_id} is being labeled by another annotator now")
        class_id = None if class_name is None else self.project.store.class_id(self.project.id, class_name)
        self.project.store.save_draft(self.project.id, self.annotator, image_id, class_id)
        if len(self.project.store.drafts(self.project.id, self.annotator)) >= self.batch_size:
            self.submit()
            return True
        return False

    def undo(self) -> int | None:
        """Take back the last answer; its image comes up next again. An unsubmitted answer is
        dropped; a submitted one is retracted by a new event (the log is never rewritten)."""
        store = self.project.store
        drafts = store.drafts(self.project.id, self.annotator)
        if drafts:
            last = drafts[-1]["image_id"]
            store.delete_draft(self.project.id, self.annotator, last)
        else:
            mine = [e for e in store.label_events(self.project.id)
                    if e["annotator"] == self.annotator and e["source"] == "human"]
            if not mine or mine[-1]["class_id"] is None:
                return None
            last = mine[-1]["image_id"]
            if not store.lease(self.project.id, [last], self.annotator, self.lease_seconds):
                raise StoreError(f"image {last} is being labeled by another annotator now")
            store.add_labels(self.project.id, [(last, None)], self.annotator, "human")
            if self.trainer is not None:
                self.trainer.request()
        # Put it first in the queue again by renewing its lease as the oldest.
        self.project.store.db.execute(
            "UPDATE leases SET leased_at = (SELECT coalesce(min(leased_at), ?) - 1 FROM leases "
            "WHERE project_id = ? AND annotator = ?) WHERE project_id = ? AND image_id = ? AND annotator = ?",
            [time.time(), self.project.id, self.annotator, self.project.id, last, self.annotator])
        return last

    def pending(self) -> list[dict]:
        return self.project.store.drafts(self.project.id, self.annotator)

    def submit(self) -> list[int]:
        """Store every pending answer as labels (one transaction) and ask for a retrain."""
        labeled = self.project.store.submit_drafts(self.project.id, self.annotator)
        if labeled and self.trainer is not None:
            self.trainer.request()
        return labeled

    # -- grid mode ------------------------------------------------------------------------------

    def grid(self, class_name: str, n: int = 12) -> list[Item]:
        """Up to `n` pool images the newest model puts in `class_name`, most confident first,
        leased to this annotator: confirm them all at once, rejecting the wrong ones."""
        version = self.latest_version()
        if version is None:
            return []
        store = self.project.store
        target = self.project.class_names.index(class_name)
        taken = {lease["image_id"] for lease in store.leases(self.project.id)
                 if lease["annotator"] != self.annotator}
        labels = store.current_labels(self.project.id)
        drafted = {d["image_id"] for d in store.db.query("SELECT image_id FROM drafts WHERE project_id = ?",
                                                        [self.project.id])}
        pool = [i for i in store.images(self.project.id, split="pool")
                if i["id"] not in labels and i["id"] not in taken and i["id"] not in drafted]
        if not pool:
            return []
        probs = load_head(version["weights_path"]).predict_proba(self.project.embeddings_of(pool))
        predicted = np.flatnonzero(probs.argmax(1) == target)
        order = predicted[np.argsort(-probs[predicted, target], kind="stable")][:n]
        granted = set(store.lease(self.project.id, [pool[i]["id"] for i in order], self.annotator,
                                  self.lease_seconds, origins=["grid"] * len(order)))
        return [Item(pool[i]["id"], pool[i]["path"], "pool", "grid", class_name, float(probs[i, target]),
                     version["version"], probs[i].tolist()) for i in order if pool[i]["id"] in granted]

    def confirm_grid(self, class_name: str, items: list[Item], rejected: set[int]) -> list[int]:
        """Label the grid's images `class_name`, except the rejected ones (freed for normal
        labeling), and submit at once."""
        for item in items:
            if item.image_id not in rejected:
                self.project.store.save_draft(self.project.id, self.annotator, item.image_id,
                                              self.project.store.class_id(self.project.id, class_name))
        self.project.store.release(self.project.id, list(rejected), self.annotator)
        return self.submit()
