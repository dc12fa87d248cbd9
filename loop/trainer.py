"""Retraining in the background: callers ask, a worker thread trains, nobody waits.

Every process that serves a project runs one Trainer for it, but only one trains at a time: the
holder of the project's training lease in the database. Its worker wakes on a request or every
few seconds, and when the store holds labels past the newest version it takes the lease, trains
on every label at that moment, and publishes the version and its evaluation in one transaction,
discarding a result that a newer version overtook. After each version it runs the hooks
(auto-accept when the project has it on) and ranks the next queue, and a second worker judges
every label in force for errors (`loop.suspects.judge`: K out-of-fold heads, a few seconds, kept
off the retrain's path). On start it mends what a killed process left (`Project.recover`), and it
submits drafts left pending too long.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable

import numpy as np

from loop import suspects
from loop.project import Project, load_head
from loop.queue import refresh_queue
from loop.store import StorageError, StoreError, owner_name

QUEUE_LOW_WATER = 30   # rank the queue again when fewer free images than this are left in it


def auto_accept_hook(project: Project, version: dict) -> None:
    """After each version: auto-accept at the project's promised precision, if it is on."""
    from loop import autoaccept

    settings = project.stored_settings()     # turned on or off since this trainer started
    if settings.auto_accept_precision:
        version["auto_accept"] = autoaccept.run(
            project, settings.auto_accept_precision, settings.audit_share,
            rng=np.random.default_rng([settings.seed, version["version"]]))


class Trainer:
    """The background trainer of one project in this process: `ticket = trainer.request()`
    returns at once; `trainer.wait(ticket)` blocks until a published version (by this process or
    another) covers the labels stored when the ticket was taken, or nothing is left to train."""

    def __init__(self, project: Project, on_version: Callable[[dict], None] | None = None,
                 poll_seconds: float = 2.0, lease_seconds: float = 300, rank_queue: bool = True,
                 start: bool = True, judge_labels: bool = True):
        self.project = project
        # Judge labels after each version this process publishes (and once on start when the
        # stored judgement is older than the newest version). A replay judges when it reviews.
        self.judge_labels = judge_labels
        self.judgements: list[dict] = []
        self.judge_errors: list[str] = []
        self._judge_wanted = judge_labels
        self.rank_queue = rank_queue   # a replay asks for its batches itself and needs no queue
        self.on_version = on_version
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.owner = owner_name("trainer")
        self.versions: list[dict] = []
        self.errors: list[str] = []
        self._head, row = project.current_head()   # warm-start from what the store already has
        if row is not None:
            self.versions.append({**row, "head": self._head})
        self._condition = threading.Condition()
        self._requested = 0
        self._checked = 0        # every label up to this event id was looked at and trained on
        self._recovered = False
        self._queue_ranked_at: int | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"trainer-{project.name}", daemon=True)
        self.tunings: list[dict] = []
        self.tune_errors: list[str] = []
        self._tune_thread: threading.Thread | None = None
        self._judge_thread = threading.Thread(target=self._judge_run, name=f"judge-{project.name}",
                                              daemon=True)
        if start:   # start=False: no worker threads; call `cycle()` (and `judge()`) yourself
            self._thread.start()
            if judge_labels:
                self._judge_thread.start()

    def request(self) -> int:
        """Ask for a retrain on every label stored so far; returns a ticket for `wait`."""
        ticket = self.project.store.last_event_id(self.project.id)
        with self._condition:
            self._requested = max(self._requested, ticket)
            self._condition.notify_all()
        return ticket

    def covered(self, ticket: int) -> bool:
        if self._checked >= ticket:
            return True
        latest = self.project.store.latest_model_version(self.project.id)
        return latest is not None and latest["last_event_id"] >= ticket

    def wait(self, ticket: int | None = None, timeout: float | None = None) -> bool:
        """Block until the labels up to `ticket` (default: every label now) are trained on."""
        ticket = self.project.store.last_event_id(self.project.id) if ticket is None else ticket
        deadline = None if timeout is None else time.monotonic() + timeout
        errors = len(self.errors)
        with self._condition:
            while not (self._stop or self.covered(ticket)):
                if len(self.errors) > errors:
                    return False   # the retrain failed: see `errors` (and the project log)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._condition.wait(0.2 if left is None else min(0.2, left))
            return True

    @property
    def latest(self) -> dict | None:
        """The newest published version (with its fitted "head"), by any process."""
        row = self.project.store.latest_model_version(self.project.id)
        if row is None:
            return None
        if self.versions and self.versions[-1]["id"] == row["id"]:
            return self.versions[-1]
        return {**row, "head": load_head(row["weights_path"])}

    @property
    def busy(self) -> bool:
        return not self.covered(self.project.store.last_event_id(self.project.id,
                                                                 exclude_sources=("auto",)))

    def close(self) -> None:
        with self._condition:
            self._stop = True
            self._condition.notify_all()
        for thread in (self._thread, self._judge_thread):    # a fine-tuning job is left to finish
            if thread.is_alive():
                thread.join()
        try:
            self.project.store.release_training(self.project.id, self.owner)
        except StorageError:
            pass   # the database is gone: there is no lease left to release

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._stop or self._requested > self._checked,
                                         timeout=self.poll_seconds)
                if self._stop:
                    return
            try:
                self.cycle()
            except Exception as exc:  # a failed cycle must not kill the worker; it is reported
                self._report(self.errors, "retrain_failed", exc)
                time.sleep(self.poll_seconds)   # and retried on the next cycle, not in a tight loop
            with self._condition:
                self._condition.notify_all()

    def cycle(self) -> dict | None:
        """One look at the store: submit stale drafts, train if labels are past the newest
        version, rank the queue if it is missing. Returns the version published, if any."""
        project, store = self.project, self.project.store
        target = store.last_event_id(project.id, exclude_sources=("auto",))
        latest = store.latest_model_version(project.id)
        stale = store.stale_draft_annotators(project.id, project.settings.draft_max_age_seconds)
        needs_training = _behind(project, latest, target)
        needs_queue = (self.rank_queue and self._queue_ranked_at != target
                       and store.queue_available(project.id) < QUEUE_LOW_WATER)
        if not (needs_training or needs_queue or stale or not self._recovered):
            self._checked = max(self._checked, target)
            return None
        if not store.acquire_training(project.id, self.owner, self.lease_seconds):
            return None   # another process trains this project; its versions show up in the store
        try:
            if not self._recovered:
                project.recover()
                self._recovered = True
                self._resume_tuning()
            for annotator in stale:
                store.submit_drafts(project.id, annotator)
            target = store.last_event_id(project.id, exclude_sources=("auto",))
            latest = store.latest_model_version(project.id)
            version = None
            if _behind(project, latest, target):
                # A head on a backbone adopted or retired since may see no more labels.
                other_features = latest is not None and latest["last_event_id"] >= target
                version = project.retrain(previous=self._head, owner=self.owner, force=other_features)
                if version is not None:
                    self._head = version["head"]
                    self.versions.append(version)
                    auto_accept_hook(project, version)
                    if self.judge_labels:
                        with self._condition:
                            self._judge_wanted = True
                            self._condition.notify_all()
                    if self.on_version:
                        self.on_version(version)
            if self.rank_queue and (version is not None or needs_queue):
                head, row = (version["head"], version) if version else project.current_head()
                refresh_queue(project, head, row and row["version"],
                              exclude=store.taken_image_ids(project.id))
                self._queue_ranked_at = target
            self._checked = max(self._checked, target)
            return version
        finally:
            store.release_training(project.id, self.owner)

    def fine_tune(self, **options) -> threading.Thread:
        """Run a fine-tuning job (`loop.tuning.run(project, **options)`) on a worker of its own,
        beside the retrains; a failure is reported like theirs (`tune_errors`, project log).
        Refused (StoreError) while another process runs one for the project."""
        from loop import tuning

        with self._condition:
            if self._tune_thread is not None and self._tune_thread.is_alive():
                raise StoreError("a fine-tuning of this project is already running in this process")
            owner = owner_name("tune")
            # Claimed here, not on the worker, so a refusal reaches the caller.
            self.project.store.claim_tuning(self.project.id, owner, tuning.new_job(
                self.project, options.get("start_block", tuning.START_BLOCK)))

            def work():
                try:
                    self.tunings.append(tuning.run(self.project, owner=owner, **options))
                except Exception as exc:
                    self._report(self.tune_errors, "fine_tune_failed", exc)
                self.request()

            self._tune_thread = threading.Thread(target=work, name=f"tune-{self.project.name}",
                                                 daemon=True)
            self._tune_thread.start()
            return self._tune_thread

    def _resume_tuning(self) -> None:
        """Pick up a fine-tuning job whose process died (a live one elsewhere is left alone)."""
        from loop import tuning

        job = tuning.running_job(self.project)
        if job is not None and tuning.abandoned(job):
            try:
                self.fine_tune(start_block=job["start_block"])
            except StoreError:
                pass   # another process took it over first

    def wait_tuned(self, timeout: float | None = None) -> bool:
        """Block until this process's fine-tuning job has finished (or failed: `tune_errors`)."""
        thread = self._tune_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def judge(self) -> dict | None:
        """Judge the labels now if the stored judgement is older than the newest version."""
        if not suspects.behind(self.project):
            return None
        result = suspects.judge(self.project)
        if result is not None:
            self.judgements.append(result)
        return result

    def wait_judged(self, timeout: float | None = None) -> bool:
        """Block until the stored judgement covers the newest version (tests, tools)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while True:
                if not suspects.behind(self.project):
                    return True
                if self._stop or (deadline is not None and time.monotonic() > deadline):
                    return False
                self._condition.wait(0.2)

    def _judge_run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._stop or self._judge_wanted)
                if self._stop:
                    return
                self._judge_wanted = False
            try:
                self.judge()
            except Exception as exc:  # reported like a failed retrain; the next version retries
                self._report(self.judge_errors, "judge_failed", exc)
            with self._condition:
                self._condition.notify_all()

    def _report(self, errors: list[str], kind: str, exc: Exception) -> None:
        """Keep a worker's failure (traceback in `errors`) and tell the pages (project log)."""
        errors.append(traceback.format_exc())
        try:
            self.project.store.log(self.project.id, kind, f"{type(exc).__name__}: {exc}")
        except StorageError:
            pass   # the database is gone: the traceback is kept here

def _behind(project: Project, latest: dict | None, target: int) -> bool:
    """Whether the newest version misses labels up to `target`, or was trained on other features
    than the heads train on now (a fine-tuned backbone adopted or retired since)."""
    return (latest is None or latest["last_event_id"] < target
            or (latest["backbone"] or project.settings.backbone) != project.features_key)


_trainers: dict[tuple[str, int], Trainer] = {}
_trainers_lock = threading.Lock()


def trainer_for(project: Project) -> Trainer:
    """The one background trainer of a project in this process (all sessions share it)."""
    key = (project.store.path, project.id)
    with _trainers_lock:
        if key not in _trainers:
            _trainers[key] = Trainer(project)
        return _trainers[key]
