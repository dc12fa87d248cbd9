"""Retraining in the background: callers ask, a worker thread trains, nobody waits.

Requests that arrive while a retrain runs are folded into the next one: the worker always trains
on every label in the store when it starts, so no confirmed label is ever left out, and a burst of
batches costs one extra retrain, not one each.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable

from loop.project import Project


class Trainer:
    """One background worker per project: `ticket = trainer.request()` returns at once;
    `trainer.wait(ticket)` blocks until a retrain that includes those labels has finished."""

    def __init__(self, project: Project, on_version: Callable[[dict], None] | None = None):
        self.project = project
        self.on_version = on_version
        self.versions: list[dict] = []
        self.errors: list[str] = []
        self._head, row = project.current_head()   # warm-start from what the store already has
        if row is not None:
            self.versions.append({**row, "head": self._head})
        self._condition = threading.Condition()
        self._requested = 0      # requests made
        self._started = 0        # requests covered by the retrain running or done
        self._finished = 0       # requests covered by a finished retrain
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"trainer-{project.name}", daemon=True)
        self._thread.start()

    def request(self) -> int:
        """Ask for a retrain on every label stored so far; returns a ticket for `wait`."""
        with self._condition:
            self._requested += 1
            self._condition.notify_all()
            return self._requested

    def wait(self, ticket: int | None = None, timeout: float | None = None) -> bool:
        """Block until the retrain covering `ticket` (default: every request so far) finished."""
        with self._condition:
            ticket = self._requested if ticket is None else ticket
            return self._condition.wait_for(lambda: self._finished >= ticket or self._stop, timeout)

    @property
    def latest(self) -> dict | None:
        """The newest model version this trainer made (with its fitted "head"), if any."""
        return self.versions[-1] if self.versions else None

    @property
    def busy(self) -> bool:
        with self._condition:
            return self._finished < self._requested

    def close(self) -> None:
        with self._condition:
            self._stop = True
            self._condition.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._requested > self._started or self._stop)
                if self._stop:
                    return
                # Everything asked for up to now is covered by this retrain.
                self._started = self._requested
                covered = self._started
            try:
                version = self.project.retrain(previous=self._head)
                if version is not None:
                    self._head = version["head"]
                    self.versions.append(version)
                    if self.on_version:
                        self.on_version(version)
            except Exception:  # a failed retrain must not kill the worker; it is reported
                self.errors.append(traceback.format_exc())
            with self._condition:
                self._finished = covered
                self._condition.notify_all()


_trainers: dict[tuple[str, int], Trainer] = {}
_trainers_lock = threading.Lock()


def trainer_for(project: Project) -> Trainer:
    """The one background trainer of a project in this process (all sessions share it)."""
    key = (project.store.path, project.id)
    with _trainers_lock:
        if key not in _trainers:
            _trainers[key] = Trainer(project)
        return _trainers[key]
