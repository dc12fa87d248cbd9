"""One annotator's labeling session: a window of images leased to them, answers kept as drafts in
the database until the batch is submitted (one transaction), undo of their own answers, and a
retrain in the background after each batch. The browser page is a thin shell over this class.

Every answer names the image it is for, and is accepted only for an image that was shown to this
person; if the image became someone else's meanwhile, the answer is kept as a conflict for the
lead instead of becoming the label (see `Store.answer`).

    session = LabelingSession(project, "ana", trainer)
    item = session.current()                     # image, suggestion, confidence, model version
    session.answer(item.image_id, "Cow")         # or None to skip; session.undo()
    session.submit()                             # also done by itself every `batch_size` answers
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loop.people import check_person_name
from loop.project import Project, load_head
from loop.store import Outcome, StoreError
from loop.trainer import Trainer

# Origins whose answer measures something, so no suggestion may anchor it.
UNSUGGESTED = ("holdout", "audit")
# Grid images are held only while the grid shows them: a short lease, renewed by each redraw.
GRID_LEASE_SECONDS = 120
ACTIONS = ("answer", "skip", "flag", "undo", "submit")

_heads: dict[str, object] = {}
# (weights path, database path, project id, image id) -> class probabilities
_scores: dict[tuple, np.ndarray] = {}


def _head(weights_path: str):
    """The head stored at `weights_path`, loaded once per process (a version never changes)."""
    if weights_path not in _heads:
        if len(_heads) >= 4:
            _heads.pop(next(iter(_heads)))
        _heads[weights_path] = load_head(weights_path)
    return _heads[weights_path]


@dataclass
class Item:
    image_id: int
    path: str
    split: str                      # "holdout" images are scored, never trained on
    origin: str | None              # why it was asked: strategy, control, holdout, audit, grid, ...
    suggestion: str | None          # None for hold-out and audit images: no anchoring
    confidence: float | None
    model_version: int | None
    probabilities: list[float] | None


class LabelingSession:
    def __init__(self, project: Project, annotator: str, trainer: Trainer | None = None,
                 batch_size: int | None = None, lease_seconds: float | None = None, window: int = 8):
        annotator = (annotator or "").strip()
        if not annotator:
            raise StoreError("name yourself first: every label records who gave it")
        self.annotator = check_person_name(annotator)
        self.project = project
        self.trainer = trainer
        self.batch_size = batch_size or project.settings.batch_size
        self.lease_seconds = lease_seconds or 60 * project.settings.lease_minutes
        self.window_size = window
        self.notice: str | None = None   # what the last call did that the page should say

    @property
    def store(self):
        return self.project.store

    # -- the window of leased images ----------------------------------------------------------

    def _open_leases(self) -> list[dict]:
        """My unexpired leases without a pending answer, in window order."""
        drafted = {d["image_id"] for d in self.store.drafts(self.project.id, self.annotator)}
        return [lease for lease in self.store.leases(self.project.id, self.annotator)
                if lease["image_id"] not in drafted and lease["origin"] != "grid"]

    def window(self, n: int | None = None) -> list[Item]:
        """Up to `n` (default the window size) images leased to me and not answered yet, topped up
        from the queue (a read: the queue is ranked in the background). When nothing is left to
        ask, pending answers are submitted rather than left stranded."""
        n = n or self.window_size
        leases = self._open_leases()
        if len(leases) < n:
            self.store.lease_next(self.project.id, self.annotator, n - len(leases), self.lease_seconds,
                                  overlap_share=self.project.settings.overlap_share,
                                  overlap_seed=self.project.settings.seed)
            leases = self._open_leases()
            if self.trainer is not None and len(leases) < n:
                self.trainer.request()    # the queue ran low: rank it again in the background
        if not leases and self.pending():
            result = self.submit()
            self.notice = (f"Nothing left to label: your last {len(result['labeled'])} answer(s) "
                           "were submitted.")
        return self.describe(leases[:n])

    def current(self) -> Item | None:
        """The next image for this annotator (leased to them), scored by the newest model."""
        items = self.window(1)
        return items[0] if items else None

    def latest_version(self) -> dict | None:
        return self.store.latest_model_version(self.project.id)

    def describe(self, leases: list[dict]) -> list[Item]:
        """Items for leased images, with the newest model's suggestion where one may be shown.
        Each image is scored once per version and process: a page redraws its window often."""
        if not leases:
            return []
        images = [self.store.image(self.project.id, lease["image_id"]) for lease in leases]
        version = self.latest_version()
        probs = None
        if version is not None:
            keys = [(version["weights_path"], self.store.path, self.project.id, image["id"])
                    for image in images]
            missing = [k for k, key in enumerate(keys) if key not in _scores]
            if missing:
                scored = _head(version["weights_path"]).predict_proba(
                    self.project.embeddings_of([images[k] for k in missing]))
                if len(_scores) > 20_000:
                    _scores.clear()
                _scores.update({keys[k]: p for k, p in zip(missing, scored)})
            probs = [_scores[key] for key in keys]
        items = []
        for k, (image, lease) in enumerate(zip(images, leases)):
            # No suggestion where the answer scores the model: hold-out images and audits of
            # auto-accept, so the person is not anchored by what is being measured.
            show = (probs is not None and image["split"] != "holdout"
                    and lease["origin"] not in UNSUGGESTED)
            p = probs[k] if show else None
            items.append(Item(image_id=image["id"], path=image["path"], split=image["split"],
                              origin=lease["origin"],
                              suggestion=self.project.class_names[int(np.argmax(p))] if show else None,
                              confidence=float(np.max(p)) if show else None,
                              model_version=version["version"] if show else None,
                              probabilities=p.tolist() if show else None))
        return items

    def renew(self) -> int:
        """Keep my leases while my page is open."""
        return self.store.renew_leases(self.project.id, self.annotator, self.lease_seconds)

    # -- answers ------------------------------------------------------------------------------

    def answer(self, image_id: int, class_name: str | None, uid: str | None = None,
               submit_full_batch: bool = True, flag: bool = False) -> Outcome:
        """Record my answer for `image_id` (None: skip; `flag`: "unclear / none of the classes",
        which goes to the lead, is no label, and never comes back to me). Answering an image again
        changes my answer (a pending one is replaced, a submitted one gets a new label event once
        submitted). Refused for an image never shown to me;
        kept as a conflict if the image is someone else's now. A full batch is submitted (the
        outcome's `submitted` is then True). `uid`: the browser's id of this answer, so a re-sent
        one is stored once."""
        class_id = None if class_name is None else self.store.class_id(self.project.id, class_name)
        outcome = self.store.answer(self.project.id, self.annotator, int(image_id), class_id, uid=uid,
                                    lease_seconds=self.lease_seconds, flag=flag)
        outcome.submitted = False
        if (outcome.status == "draft" and submit_full_batch
                and len(self.pending()) >= self.batch_size):
            self.submit()
            outcome.submitted = True
        return outcome

    def apply(self, answers: list[dict]) -> dict:
        """Apply answers sent by the browser, each {"uid", "image_id", "action": "answer" | "skip" |
        "flag" | "undo" | "submit", "class"}, in order, each at most once (by uid, across reconnects).
        Returns {"acked": [uids stored or settled], "refused": {uid: reason}, "notes": [...]}:
        the browser stops re-sending both, and shows the refusals and notes."""
        acked, refused, notes = [], {}, []
        for a in answers:
            uid = str(a.get("uid") or "")
            if not uid:
                continue
            done = self.store.receipt(self.project.id, self.annotator, uid)
            if done is not None:
                (refused.__setitem__(uid, "refused before") if done["outcome"] == "refused"
                 else acked.append(uid))
                continue
            action = a.get("action")
            try:
                image_id = None if a.get("image_id") is None else int(a["image_id"])
                if action in ("answer", "skip", "flag"):
                    if image_id is None:
                        raise StoreError("an answer must name its image")
                    outcome = self.answer(image_id, a.get("class") if action == "answer" else None,
                                          uid=uid, flag=action == "flag")
                    if outcome.status in ("conflict", "dropped"):
                        notes.append(outcome.message)
                    if outcome.submitted:
                        notes.append("Batch submitted; the model retrains in the background.")
                elif action == "undo":
                    undone = self.undo(image_id)
                    self.store.record_receipt(self.project.id, self.annotator, uid, "undo")
                    if undone is None:
                        notes.append("Nothing to undo.")
                elif action == "submit":
                    result = self.submit()
                    self.store.record_receipt(self.project.id, self.annotator, uid, "submit")
                    notes.append(f"Submitted {len(result['labeled'])} label(s); retraining in the "
                                 "background.")
                else:
                    raise StoreError(f"unknown action {action!r}")
                acked.append(uid)
            except (StoreError, ValueError, TypeError) as exc:
                refused[uid] = str(exc)
                self.store.record_receipt(self.project.id, self.annotator, uid, "refused")
        if self.notice:
            notes.append(self.notice)
            self.notice = None
        return {"acked": acked, "refused": refused, "notes": notes}

    def undo(self, image_id: int | None = None) -> int | None:
        """Take back my last answer (walking back through earlier ones on each call): an
        unsubmitted one is dropped; a submitted one is undone by a new event restoring the label
        before it, refused if someone else labeled the image since. The image comes up first
        again. With `image_id`, only if that is my last answer."""
        submitted_before = not self.pending()
        undone = self.store.undo_last(self.project.id, self.annotator, image_id, self.lease_seconds)
        if undone is not None and submitted_before and self.trainer is not None:
            self.trainer.request()
        return undone

    def pending(self) -> list[dict]:
        return self.store.drafts(self.project.id, self.annotator)

    def recent(self, n: int = 10) -> list[dict]:
        """My last `n` answers, oldest first (for the page's list after a reload): each
        {"image_id", "path", "action": "answer" | "skip" | "flag", "class", "submitted"}."""
        names = self.project.class_names
        by_id = {c["id"]: c["name"] for c in self.store.classes(self.project.id)}
        rows = []
        for r in reversed(self.store.recent_answers(self.project.id, self.annotator, n)):
            action = "flag" if r["flagged"] else "skip" if r["class_id"] is None else "answer"
            cls = by_id.get(r["class_id"])
            rows.append({"image_id": r["image_id"],
                         "path": self.store.image(self.project.id, r["image_id"])["path"],
                         "action": action, "class": cls if cls in names else None,
                         "submitted": bool(r["submitted"])})
        return rows

    def progress(self, since: float = 0.0) -> dict:
        """Images left, my labels (in all and since `since`), the team's, my pending answers and
        the open flags, from one read of the store (see `Store.progress`)."""
        return self.store.progress(self.project.id, self.annotator, since)

    def submit(self) -> dict:
        """Store every pending answer as labels (one transaction) and ask for a retrain.
        Returns {"labeled": [image ids], "conflicts": [image ids]}."""
        result = self.store.submit_drafts(self.project.id, self.annotator)
        if result["labeled"] and self.trainer is not None:
            self.trainer.request()
        if result["conflicts"]:
            self.notice = (f"{len(result['conflicts'])} answer(s) disagreed with a label someone else "
                           "gave and were kept for the lead to resolve.")
        return result

    def label_batch(self, labels: list[tuple[int, str | None]]) -> dict:
        """The command line's path through the same rules as the page: each image is leased to
        me first (refused if another person holds it or has answered it), answered, and the batch
        submitted at once. `None` retracts my own label in force. Returns {"labeled",
        "conflicts", "refused": {image id: reason}, "retracted"}."""
        refused, retracted, conflicts = {}, [], []
        answers = [(int(i), c) for i, c in labels if c is not None]
        for image_id, _ in labels:
            self.store.image(self.project.id, image_id)          # a clear error for a bad id
        for image_id, class_name in answers:
            if class_name is not None:
                self.store.class_id(self.project.id, class_name)  # every class checked first
        for image_id in [int(i) for i, c in labels if c is None]:
            try:
                self.store.retract_own(self.project.id, self.annotator, image_id)
                retracted.append(image_id)
            except StoreError as exc:
                refused[image_id] = str(exc)
        granted = set(self.store.lease(self.project.id, [i for i, _ in answers], self.annotator,
                                       self.lease_seconds, origins=["command-line"] * len(answers)))
        for image_id, class_name in answers:
            if image_id not in granted:
                holder = [lease["annotator"] for lease in self.store.leases(self.project.id)
                          if lease["image_id"] == image_id]
                refused[image_id] = (f"image {image_id} is with {holder[0]} now" if holder else
                                     f"image {image_id} has a pending answer by someone else")
                continue
            if self.answer(image_id, class_name, submit_full_batch=False).status == "conflict":
                conflicts.append(image_id)
        result = self.submit()
        if (retracted or result["labeled"]) and self.trainer is not None:
            self.trainer.request()
        return {"labeled": result["labeled"], "conflicts": conflicts + result["conflicts"],
                "refused": refused, "retracted": retracted}

    # -- grid mode ------------------------------------------------------------------------------

    def grid(self, class_name: str, n: int = 12, lease_seconds: float = GRID_LEASE_SECONDS) -> list[Item]:
        """Up to `n` pool images the newest model puts in `class_name`, most confident first,
        leased to me while I look at them: for `lease_seconds`, renewed by each call (the page
        calls again while the grid is shown), and the previous grid's images (another class's)
        are let go at once. Confirm them all at once, rejecting the wrong ones."""
        self.release_grid()
        version = self.latest_version()
        if version is None:
            return []
        target = self.project.class_names.index(class_name)
        taken = self.store.taken_image_ids(self.project.id)
        labels = self.store.current_labels(self.project.id)
        pool = [i for i in self.store.images(self.project.id, split="pool")
                if i["id"] not in labels and i["id"] not in taken]
        if not pool:
            return []
        probs = _head(version["weights_path"]).predict_proba(self.project.embeddings_of(pool))
        predicted = np.flatnonzero(probs.argmax(1) == target)
        order = predicted[np.argsort(-probs[predicted, target], kind="stable")][:n]
        granted = set(self.store.lease(self.project.id, [pool[i]["id"] for i in order], self.annotator,
                                       lease_seconds, origins=["grid"] * len(order)))
        return [Item(pool[i]["id"], pool[i]["path"], "pool", "grid", class_name, float(probs[i, target]),
                     version["version"], probs[i].tolist()) for i in order if pool[i]["id"] in granted]

    def release_grid(self) -> None:
        """Let go of grid images I was shown but did not answer."""
        drafted = {d["image_id"] for d in self.pending()}
        self.store.release(self.project.id, [lease["image_id"] for lease in
                                             self.store.leases(self.project.id, self.annotator)
                                             if lease["origin"] == "grid" and lease["image_id"] not in drafted],
                           self.annotator)

    def confirm_grid(self, class_name: str, items: list[Item], rejected: set[int]) -> dict:
        """Label the grid's images `class_name`, except the rejected ones (freed for normal
        labeling), through the same checks as any answer, and submit at once. Returns
        {"labeled", "conflicts"} as `submit` does (answers kept as conflicts included)."""
        conflicts = []
        for item in items:
            if item.image_id not in rejected:
                outcome = self.answer(item.image_id, class_name, submit_full_batch=False)
                if outcome.status == "conflict":
                    conflicts.append(item.image_id)
        self.store.release(self.project.id, list(rejected), self.annotator)
        result = self.submit()
        result["conflicts"] = conflicts + result["conflicts"]
        return result
