"""The project store: one SQLite database (WAL mode, through sqlite-utils) or one PostgreSQL
database (through psycopg 3, named by a `postgresql://` URL), the schema in one place, and the
only module that speaks SQL. Its SQL is written once and runs on both; what differs between the two
is kept in their connection classes at the end of this file.

Labels are an append-only event log; an image's current label is its latest event (an event with
no class retracts the label). An answer that cannot become the label (its image is with someone
else now, or someone labeled it since it was shown, or it disagrees with a label in force) is kept
as a conflict for the lead, never dropped and never written over the label.

>>> store = Store(":memory:")
>>> pid = store.create_project("demo", "/tmp", "{}", ["cat", "dog"])
>>> [c["name"] for c in store.classes(pid)]
['cat', 'dog']
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import sqlite3
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlite_utils

LABEL_SOURCES = ("seed", "human", "simulated", "imported", "auto", "review")
# Sources whose label a later answer by another person must not silently replace: a second
# opinion that agrees is stored beside it, one that disagrees becomes a conflict.
OPINION_SOURCES = ("seed", "human", "simulated", "imported", "review")
SPLITS = ("pool", "holdout")

SCHEMA = {
    "projects": ({"id": int, "name": str, "root": str, "settings": str, "created_at": float},
                 {"pk": "id", "not_null": {"name", "root"}}),
    "classes": ({"id": int, "project_id": int, "name": str, "position": int},
                {"pk": "id", "foreign_keys": [("project_id", "projects", "id")]}),
    "images": ({"id": int, "project_id": int, "path": str, "hash": str, "split": str,
                "known_class_id": int, "status": str, "reason": str},
               {"pk": "id", "foreign_keys": [("project_id", "projects", "id"),
                                             ("known_class_id", "classes", "id")]}),
    # `undoes`: the event an undo takes back (the undo restores the label before it).
    "label_events": ({"id": int, "project_id": int, "image_id": int, "class_id": int,
                      "annotator": str, "source": str, "created_at": float, "origin": str,
                      "undoes": int},
                     {"pk": "id", "foreign_keys": [("project_id", "projects", "id"),
                                                   ("image_id", "images", "id"),
                                                   ("class_id", "classes", "id")]}),
    # `train_ids`: the image ids the head was trained on (zlib-compressed int64), for audits.
    "model_versions": ({"id": int, "project_id": int, "version": int, "created_at": float,
                        "n_labels": int, "last_event_id": int, "class_counts": str,
                        "train_seconds": float, "weights_path": str, "backbone": str, "n_auto": int,
                        "train_ids": bytes},
                       {"pk": "id", "foreign_keys": [("project_id", "projects", "id")]}),
    # Backbones fine-tuned on a project's labels (loop.tuning): `key` names their embedding cache,
    # and the newest "adopted" one is what the project's heads train on. Status "tuning" or
    # "embedding": unfinished, run by `owner` (a dead owner's job is resumed by the next to
    # start one); then "adopted", "kept-frozen" (it did not beat what the project had) or "failed".
    "backbone_versions": ({"id": int, "project_id": int, "key": str, "base": str,
                           "start_block": int, "status": str, "owner": str, "n_labels": int,
                           "last_event_id": int, "weights_path": str, "embedded": int,
                           "total": int, "holdout_before": float, "holdout_after": float,
                           "n_holdout": int, "tune_seconds": float, "embed_seconds": float,
                           "message": str, "created_at": float, "updated_at": float,
                           "finished_at": float},
                          {"pk": "id", "foreign_keys": [("project_id", "projects", "id")]}),
    "evaluations": ({"id": int, "project_id": int, "model_version_id": int, "n_labels": int,
                     "n_holdout": int, "accuracy": float, "balanced_accuracy": float,
                     "per_class": str, "rules": str, "ece": float, "created_at": float,
                     "rescored_at": float},
                    {"pk": "id", "foreign_keys": [("project_id", "projects", "id"),
                                                  ("model_version_id", "model_versions", "id")]}),
    "holdout_predictions": ({"evaluation_id": int, "image_id": int, "class_id": int,
                             "probs": bytes},
                            {"pk": ("evaluation_id", "image_id"),
                             "foreign_keys": [("evaluation_id", "evaluations", "id"),
                                              ("image_id", "images", "id")]}),
    # Labels that are probably wrong, as judged after the newest retrain (replaced each time):
    # the label event judged, who gave it, the model's choice, out-of-fold (pool) or held-out
    # (hold-out) probabilities of both, and whether confident learning flags it (`issue`).
    "suspects": ({"project_id": int, "image_id": int, "split": str, "event_id": int,
                  "class_id": int, "annotator": str, "source": str, "predicted_class_id": int,
                  "p_given": float, "p_predicted": float, "score": float, "issue": int,
                  "model_version": int, "created_at": float},
                 {"pk": ("project_id", "image_id"),
                  "foreign_keys": [("project_id", "projects", "id"), ("image_id", "images", "id")]}),
    # What a reviewer decided about a suspected label (`event_id`, the label they saw): "kept",
    # "changed" (`new_event_id`: the review's label event) or "flagged" (label withdrawn, flag).
    "reviews": ({"id": int, "project_id": int, "image_id": int, "event_id": int, "split": str,
                 "reviewer": str, "annotator": str, "decision": str, "old_class_id": int,
                 "class_id": int, "new_event_id": int, "created_at": float},
                {"pk": "id", "foreign_keys": [("project_id", "projects", "id"),
                                              ("image_id", "images", "id")]}),
    # Suspects a lead sent to a second person to review (served to them on the Review page).
    "review_assignments": ({"project_id": int, "image_id": int, "event_id": int, "reviewer": str,
                            "assigned_by": str, "created_at": float},
                           {"pk": ("project_id", "image_id")}),
    # Who is looking at which image now: a lease expires, so a closed tab frees its images.
    # `position` orders an annotator's window (an undone image goes back to the front).
    "leases": ({"project_id": int, "image_id": int, "annotator": str, "leased_at": float,
                "expires_at": float, "origin": str, "position": float},
               {"pk": ("project_id", "image_id"),
                "foreign_keys": [("project_id", "projects", "id"), ("image_id", "images", "id")]}),
    # When each image was last handed to each person: an answer is accepted only for an image
    # shown to its annotator, and checked against what others did to the image since.
    "shown": ({"project_id": int, "image_id": int, "annotator": str, "shown_at": float,
               "skipped": int, "skipped_at": float},
              {"pk": ("project_id", "image_id", "annotator")}),
    # Answers given but not yet submitted: kept in the database so a refresh loses none.
    # `flagged`: a skip that says "unclear / none of the classes" (it goes to the lead).
    "drafts": ({"project_id": int, "annotator": str, "image_id": int, "class_id": int,
                "skipped": int, "created_at": float, "origin": str, "shown_at": float,
                "flagged": int},
               {"pk": ("project_id", "annotator", "image_id"),
                "foreign_keys": [("project_id", "projects", "id"), ("image_id", "images", "id"),
                                 ("class_id", "classes", "id")]}),
    # Answers the browser sent, by their id, so one re-sent after a reconnect is stored once.
    "receipts": ({"project_id": int, "annotator": str, "uid": str, "created_at": float,
                  "outcome": str},
                 {"pk": ("project_id", "annotator", "uid")}),
    # Answers that did not become the label, for the lead to resolve.
    "conflicts": ({"id": int, "project_id": int, "image_id": int, "annotator": str,
                   "class_id": int, "reason": str, "in_force_event_id": int, "created_at": float,
                   "status": str, "resolved_by": str, "resolved_at": float, "resolution": str,
                   "resolution_event_id": int},
                  {"pk": "id", "foreign_keys": [("project_id", "projects", "id"),
                                                ("image_id", "images", "id")]}),
    # Images an annotator flagged as unclear or none of the classes: not a label, kept out of
    # everyone's queue until a lead looks at them (`status` "open" or "resolved").
    "flags": ({"project_id": int, "image_id": int, "annotator": str, "created_at": float,
               "status": str, "resolved_by": str, "resolved_at": float},
              {"pk": ("project_id", "image_id", "annotator")}),
    # Images a lead sent to a named person (a third opinion on a conflict): served to them first.
    "assignments": ({"project_id": int, "image_id": int, "annotator": str, "assigned_by": str,
                     "created_at": float},
                    {"pk": ("project_id", "image_id")}),
    # Images auto-accept would have labeled, sent to people instead to measure its precision.
    "audits": ({"project_id": int, "image_id": int, "predicted_class_id": int, "model_version": int,
                "plan": str, "created_at": float},
               {"pk": ("project_id", "image_id"),
                "foreign_keys": [("project_id", "projects", "id"), ("image_id", "images", "id")]}),
    # The next images to ask about, ranked by the strategy in the background after each version,
    # so handing an annotator their next images is a read.
    "queue_items": ({"project_id": int, "image_id": int, "position": int, "origin": str,
                     "model_version": int, "created_at": float},
                    {"pk": ("project_id", "image_id")}),
    # One trainer per project across processes: whoever holds this lease trains and publishes.
    "training_lease": ({"project_id": int, "owner": str, "expires_at": float},
                       {"pk": "project_id"}),
    # What the background work reports to the pages (a failed retrain, a recovery).
    "project_log": ({"id": int, "project_id": int, "kind": str, "message": str, "created_at": float},
                    {"pk": "id"}),
    # People and their roles; a token is stored only as its sha256.
    "people": ({"name": str, "role": str, "token_hash": str, "created_at": float,
                "revoked_at": float},
               {"pk": "name"}),
    # Folders the browser may import from (a lead adds them from the command line).
    "import_roots": ({"path": str, "added_at": float}, {"pk": "path"}),
}
INDEXES = [
    ("classes", ["project_id", "name"], True),
    ("images", ["project_id", "path"], True),
    ("images", ["project_id", "hash"], False),
    ("label_events", ["project_id", "image_id"], False),
    ("label_events", ["project_id", "annotator"], False),
    ("label_events", ["project_id", "source"], False),
    ("model_versions", ["project_id", "version"], True),
    ("evaluations", ["project_id", "model_version_id"], False),
    ("backbone_versions", ["project_id", "key"], True),
    ("conflicts", ["project_id", "status"], False),
    ("conflicts", ["project_id", "image_id"], False),
    ("drafts", ["project_id", "image_id"], False),
    ("shown", ["project_id", "annotator", "skipped"], False),
    ("queue_items", ["project_id", "position"], False),
    ("people", ["token_hash"], True),
    ("reviews", ["project_id", "event_id"], False),
    ("suspects", ["project_id", "score"], False),
]
REVIEW_DECISIONS = ("kept", "changed", "flagged")


class StoreError(ValueError):
    """A request the store refuses; the message names the bad thing."""


class StorageError(StoreError):
    """The database itself cannot be written or read: disk full, read-only, deleted."""


def translate(exc: Exception, path: str) -> StorageError | None:
    """One clear message for the storage failures a person can act on (None: not one of them)."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        return _translate_postgres(exc, path)
    text = str(exc).lower()
    if "disk is full" in text or "database or disk is full" in text:
        return StorageError(f"the disk holding the database '{path}' is full: nothing from this "
                            "action was stored. Free some space and try again")
    if "readonly" in text or "read-only" in text:
        return StorageError(f"the database '{path}' is read-only: nothing from this action was "
                            "stored. Give the app's user write access to the file and its folder")
    if "disk i/o error" in text or "no such table" in text or "file is not a database" in text \
            or "unable to open" in text:
        return StorageError(f"the database '{path}' cannot be used ({exc}): nothing from this "
                            "action was stored. Check the file, or restore a backup with "
                            "`python -m loop restore BACKUP`")
    return None


def _translate_postgres(exc, path: str) -> StorageError | None:
    """`translate` for PostgreSQL, by the error's SQLSTATE (psycopg.Error.sqlstate)."""
    import psycopg

    state = exc.sqlstate or ""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if state == "53100":                       # disk_full
        return StorageError(f"the disk holding the database '{path}' is full: nothing from this "
                            "action was stored. Free some space on the database server and try again")
    if state in ("25006", "42501"):            # read_only_sql_transaction, insufficient_privilege
        return StorageError(f"the database '{path}' is read-only: nothing from this action was "
                            f"stored ({first_line}). Give its user write access (GRANT), or point "
                            "JUICER_DB at a server that takes writes (not a standby)")
    # The server is gone or refuses us: connection failures (08, or none: libpq's own), a shut
    # down or restarting server (57P), no such database (3D000) or table (42P01), a refused login
    # (28), no resources (53).
    if (isinstance(exc, psycopg.OperationalError) and (not state or state[:2] in ("08", "28", "53")
                                                       or state.startswith("57P"))) \
            or state in ("3D000", "42P01"):
        return StorageError(f"the database '{path}' cannot be used ({first_line}): nothing from "
                            "this action was stored. Check that the PostgreSQL server runs and that "
                            "JUICER_DB names it, or restore a dump with pg_restore")
    return None


@dataclass
class Outcome:
    """What became of one answer: "draft" (kept, to be submitted), "conflict" (kept for the lead,
    not the label), "duplicate" (already stored under this id), "dropped" (a skip for an image that
    is no longer this person's). `message` says it in words."""

    status: str
    image_id: int
    message: str = ""
    submitted: bool = False   # set by a session when this answer completed a batch


def owner_name(kind: str = "trainer") -> str:
    """A training-lease owner name that says which process holds it: host:pid:kind-random."""
    return f"{socket.gethostname()}:{os.getpid()}:{kind}-{uuid.uuid4().hex[:8]}"


def owner_alive(owner: str) -> bool:
    """False only when `owner` names a process on this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ids(blob: bytes | None) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype=np.int64) if blob else np.zeros(0, np.int64)


class Store:
    """Thread-safe access to one database: a SQLite file (or ":memory:"), or the PostgreSQL
    database a `postgresql://user@host:port/db` URL names. Each thread gets its own connection."""

    def __init__(self, path: str | Path):
        self.postgres = is_postgres(path)
        # `path` names the database in messages (and keys caches); a URL's password is left out.
        self.path = _without_password(str(path)) if self.postgres else str(path)
        self._url = str(path)
        self._local = threading.local()
        if self.path == ":memory:":
            # One shared in-memory connection (tests and doctests only).
            self._shared = _SQLite(sqlite3.connect(":memory:", check_same_thread=False))
        else:
            if not self.postgres:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._shared = None
        self._ready = False
        try:
            self.db.create_schema()
        except sqlite3.Error as exc:
            raise (translate(exc, self.path) or exc) from None
        self._ready = True

    @property
    def db(self) -> _SQLite | _Postgres:
        """This thread's connection: `execute` (a cursor) and `query` (dicts) take the store's SQL,
        with `?` or `:name` placeholders, on either database."""
        if self._shared is not None:
            return self._shared
        db = getattr(self._local, "db", None)
        if self.postgres:
            if db is None or db.conn.broken or db.conn.closed:   # a lost connection is made anew
                db = self._local.db = _Postgres(self._url, self.path)
            return db
        identity = self._identity()
        if (db is not None and identity != self._local.identity) or (self._ready and identity is None):
            # The file was deleted (or replaced) under us: writing on would go to a dead WAL (or a
            # new empty file) and be lost, so every call fails loudly instead.
            if identity is None:
                raise StorageError(f"the database '{self.path}' was deleted while Juicer ran: "
                                   "nothing from this action was stored. Restore it with "
                                   "`python -m loop restore BACKUP` and restart the app")
            db.conn.close()
            db = None
        if db is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db = _SQLite(conn)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
            self._local.identity = self._identity()
        return db

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def transaction(self):
        """`with store.transaction():` all or nothing (an exception rolls everything back); a
        storage failure comes out as one clear StorageError. Writers take turns: one write
        transaction at a time on the whole database, on SQLite and on PostgreSQL alike."""
        return _Transaction(self.db, self.path)

    @contextlib.contextmanager
    def snapshot(self):
        """`with store.snapshot():` every read inside sees the database as it was at its first
        read (one read transaction), whatever other threads and processes write meanwhile. For
        reads only: a page's figures all come from one such read."""
        db = self.db
        if db.in_transaction:
            yield
            return
        db.begin_read()
        try:
            yield
        finally:
            with contextlib.suppress(StoreError, *db.errors):
                db.execute("ROLLBACK")

    def query(self, sql: str, args: Sequence = ()) -> list[dict]:
        return list(self.db.query(sql, list(args)))

    def _one(self, sql: str, args: Sequence = ()):
        row = self.db.execute(sql, list(args)).fetchone()
        return None if row is None else row[0]

    def _insert(self, table: str, row: dict) -> int:
        """Insert one row into a table keyed by `id`; returns its id."""
        row = _values(row)
        sql = (f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))}) "
               "RETURNING id")
        return self.db.execute(sql, list(row.values())).fetchall()[0][0]

    def _insert_all(self, table: str, rows: Iterable[dict]) -> None:
        """Insert many rows; a column missing from a row is NULL there."""
        rows = [_values(r) for r in rows]
        if not rows:
            return
        columns = list(dict.fromkeys(c for r in rows for c in r))
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
               f"({', '.join('?' * len(columns))})")
        self.db.executemany(sql, [[r.get(c) for c in columns] for r in rows])

    def _replace(self, table: str, row: dict) -> None:
        """Insert `row`, or replace the row with its primary key (as SQLite's INSERT OR REPLACE)."""
        row = _values(row)
        self.db.execute(_replace_sql(table, tuple(row)), list(row.values()))

    # -- projects and classes -------------------------------------------------------------------

    def create_project(self, name: str, root: str, settings_json: str,
                       class_names: Sequence[str]) -> int:
        if not name or not name.replace("-", "").replace("_", "").isalnum() or not name.isascii():
            raise StoreError(f"project name '{name}' must be letters, digits, '-' or '_'")
        if self._one("SELECT count(*) FROM projects WHERE name = ?", [name]):
            raise StoreError(f"project '{name}' already exists; open it or choose another name")
        names = list(class_names)
        if len(names) < 2 or len(set(names)) != len(names):
            raise StoreError(f"a project needs at least 2 distinct classes, got {names}")
        with self.transaction():
            pid = self._insert("projects", {"name": name, "root": root, "settings": settings_json,
                                            "created_at": time.time()})
            self._insert_all("classes", ({"project_id": pid, "name": c, "position": i}
                                         for i, c in enumerate(names)))
        return pid

    def project(self, name_or_id: str | int) -> dict:
        column = "id" if isinstance(name_or_id, int) else "name"
        rows = self.query(f"SELECT * FROM projects WHERE {column} = ?", [name_or_id])
        if not rows:
            known = ", ".join(r["name"] for r in self.projects()) or "none yet"
            raise StoreError(f"no project '{name_or_id}' (known projects: {known})")
        return rows[0]

    def projects(self) -> list[dict]:
        return self.query("SELECT * FROM projects ORDER BY id")

    def classes(self, project_id: int) -> list[dict]:
        return self.query("SELECT * FROM classes WHERE project_id = ? ORDER BY position", [project_id])

    def class_id(self, project_id: int, name: str) -> int:
        for row in self.classes(project_id):
            if row["name"] == name:
                return row["id"]
        known = ", ".join(c["name"] for c in self.classes(project_id))
        raise StoreError(f"class '{name}' does not exist in this project (classes: {known})")

    def update_settings(self, project_id: int, settings_json: str) -> None:
        with self.transaction():
            if not self.db.execute("UPDATE projects SET settings = ? WHERE id = ?",
                                   [settings_json, project_id]).rowcount:
                raise StoreError(f"no project with id {project_id}")

    # -- import roots: the folders a browser may import from ------------------------------------

    def import_roots(self) -> list[str]:
        return [r["path"] for r in self.query("SELECT path FROM import_roots ORDER BY path")]

    def add_import_root(self, path: str) -> None:
        with self.transaction():
            self._replace("import_roots", {"path": str(path), "added_at": time.time()})

    def remove_import_root(self, path: str) -> bool:
        with self.transaction():
            found = self._one("SELECT count(*) FROM import_roots WHERE path = ?", [str(path)])
            self.db.execute("DELETE FROM import_roots WHERE path = ?", [str(path)])
        return bool(found)

    # -- people ---------------------------------------------------------------------------------

    def add_person(self, name: str, role: str, token_hash: str) -> None:
        with self.transaction():
            row = self.db.execute("SELECT revoked_at FROM people WHERE name = ?", [name]).fetchone()
            if row is not None and row[0] is None:
                raise StoreError(f"'{name}' already has a token; revoke it first "
                                 f"(python -m loop token revoke {name})")
            self._replace("people", {"name": name, "role": role, "token_hash": token_hash,
                                     "created_at": time.time(), "revoked_at": None})

    def person_by_token_hash(self, token_hash: str) -> dict | None:
        rows = self.query("SELECT * FROM people WHERE token_hash = ? AND revoked_at IS NULL",
                          [token_hash])
        return rows[0] if rows else None

    def people(self) -> list[dict]:
        return self.query("SELECT name, role, created_at, revoked_at FROM people ORDER BY name")

    def revoke_person(self, name: str) -> bool:
        with self.transaction():
            changed = self.db.execute("UPDATE people SET revoked_at = ? WHERE name = ? AND "
                                      "revoked_at IS NULL", [time.time(), name]).rowcount
        return bool(changed)

    # -- images ---------------------------------------------------------------------------------

    def add_images(self, project_id: int, rows: Iterable[dict]) -> None:
        with self.transaction():
            self._insert_all("images", ({"project_id": project_id, "status": "ok", **r} for r in rows))

    def image(self, project_id: int, image_id: int) -> dict:
        rows = self.query("SELECT * FROM images WHERE project_id = ? AND id = ?", [project_id, int(image_id)])
        if not rows:
            raise StoreError(f"image id {image_id} is not an image of this project")
        return rows[0]

    @staticmethod
    def _image_filter(split: str | None, status: str | None) -> tuple[list[str], list]:
        """The WHERE terms (and their arguments) that pick images by split and status."""
        where, args = [], []
        if split:
            where.append("split = ?")
            args.append(split)
        if status:
            where.append("status = ?")
            args.append(status)
        return where, args

    def images(self, project_id: int, split: str | None = None, status: str | None = "ok") -> list[dict]:
        where, args = self._image_filter(split, status)
        return self.query(f"SELECT * FROM images WHERE {' AND '.join(['project_id = ?', *where])} "
                          "ORDER BY id", [project_id, *args])

    def count_images(self, project_id: int, status: str = "ok") -> int:
        return self._one("SELECT count(*) FROM images WHERE project_id = ? AND status = ?",
                         [project_id, status])

    def images_by_id(self, project_id: int, image_ids: Sequence[int]) -> dict[int, dict]:
        """{id: row} of the images `image_ids` of the project (read 500 at a time)."""
        out: dict[int, dict] = {}
        ids = [int(i) for i in image_ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            # `+project_id`: by primary key, not the (project_id, hash) index (see image_hashes).
            for row in self.query(f"SELECT * FROM images WHERE +project_id = ? AND id IN "
                                  f"({','.join('?' * len(chunk))})", [project_id, *chunk]):
                out[row["id"]] = row
        return out

    def skipped_images(self, project_id: int) -> list[dict]:
        return self.query("SELECT * FROM images WHERE project_id = ? AND status = 'skipped' "
                          "ORDER BY id", [project_id])

    def skip_image(self, image_id: int, reason: str) -> None:
        with self.transaction():
            if not self.db.execute("UPDATE images SET status = 'skipped', reason = ? WHERE id = ?",
                                   [reason, int(image_id)]).rowcount:
                raise StoreError(f"no image with id {image_id}")

    def set_split(self, image_ids: Sequence[int], split: str) -> None:
        if split not in SPLITS:
            raise StoreError(f"split must be one of {SPLITS}, got '{split}'")
        with self.transaction():
            for start in range(0, len(image_ids), 500):
                chunk = list(image_ids[start:start + 500])
                self.db.execute(f"UPDATE images SET split = ? WHERE id IN ({','.join('?' * len(chunk))})",
                                [split, *chunk])

    # -- images of a large project, in bounded memory -------------------------------------------
    # What runs after an import (embedding, drawing the hold-out and the seeds) reads a project of
    # a million images through these: rows a chunk at a time, or one compact array per column.

    def iter_images(self, project_id: int, split: str | None = None, status: str | None = "ok",
                    chunk: int = 10_000, columns: Sequence[str] | None = None
                    ) -> Iterator[list[dict]]:
        """The rows of `images(project_id, split, status)`, in id order, as lists of at most
        `chunk` rows (with `columns`, only those and "id"). Each chunk is one short query
        (keyset pagination: `id > last`), so no chunk's read holds the others in memory, nor a
        read transaction open across the whole project."""
        names = ["id", *(c for c in columns if c != "id")] if columns else ["*"]
        unknown = [c for c in names if c != "*" and c not in SCHEMA["images"][0]]
        if unknown:
            raise StoreError(f"images have no column(s) {', '.join(unknown)}")
        # `+project_id`: SQLite would otherwise read the rows through the (project_id, hash)
        # index and sort all of them for each chunk; this way it walks the primary key from
        # `last` and stops after `chunk` rows (PostgreSQL reads the unary plus as a no-op).
        terms, values = self._image_filter(split, status)
        where, args = ["+project_id = ?", "id > ?", *terms], [project_id, -1, *values]
        sql = f"SELECT {', '.join(names)} FROM images WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        while rows := self.query(sql, [*args, chunk]):
            args[1], full = rows[-1]["id"], len(rows) == chunk
            yield rows
            del rows            # not held while the next chunk is read
            if not full:
                return

    def split_counts(self, project_id: int) -> dict[str, int]:
        """{split: usable images in it} of the project."""
        return {r[0]: r[1] for r in self.db.execute(
            "SELECT split, count(*) FROM images WHERE project_id = ? AND status = 'ok' GROUP BY split",
            [project_id]).fetchall()}

    def pool_copy_groups(self, project_id: int, chunk: int = 10_000) -> dict[str, np.ndarray]:
        """The groups of byte-for-byte copies (one per content hash; a file with no copy is a
        group of one) that could join the hold-out: every usable copy in the pool, and at most
        one folder class among them (copies in two class folders have no one truth). As int64
        arrays, a group per entry, in the order of each group's lowest image id (the order
        `loop.project.copy_groups` gives): "first" (that id), "size" (its copies) and "class_id"
        (their folder class, -1 for none). Grouped by the database, `chunk` groups per query in
        hash order along the (project_id, hash) index, so a million images cost a few arrays,
        not their rows. (Every usable image has a hash: an import hashes each file it keeps.)"""
        sql = ("SELECT min(id), count(*), COALESCE(max(known_class_id), -1), hash FROM images "
               "WHERE project_id = ? AND status = 'ok' AND hash IS NOT NULL {after}GROUP BY hash "
               "HAVING count(DISTINCT known_class_id) <= 1 "
               "AND sum(CASE WHEN split = 'pool' THEN 0 ELSE 1 END) = 0 ORDER BY hash LIMIT ?")
        names = ("first", "size", "class_id")
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        rows = self.db.execute(sql.format(after=""), [project_id, chunk]).fetchall()
        while rows:
            page = np.array([row[:3] for row in rows], dtype=np.int64).reshape(-1, 3)
            for k, name in enumerate(names):
                parts[name].append(page[:, k].copy())
            if len(rows) < chunk:
                break
            rows = self.db.execute(sql.format(after="AND hash > ? "),
                                   [project_id, rows[-1][3], chunk]).fetchall()
        # One column at a time, so the pages and the sorted copy of all three never coexist.
        groups = {name: np.concatenate(parts.pop(name) or [np.zeros(0, np.int64)]) for name in names}
        order = np.argsort(groups["first"])
        for name in names:
            groups[name] = groups[name][order]
        return groups

    def copies(self, project_id: int, image_ids: Sequence[int]) -> list[dict]:
        """Every usable image with the same content as one of `image_ids` (itself included):
        rows {"copy_of": the image given, "id", "known_class_id"}, in id order. Read 500 at a
        time."""
        out: list[dict] = []
        ids = [int(i) for i in image_ids]
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            # `+f.project_id`: SQLite would otherwise scan the whole project along the (project_id,
            # hash) index instead of looking the given ids up by primary key.
            out += self.query(
                "SELECT f.id AS copy_of, i.id AS id, i.known_class_id AS known_class_id FROM images f "
                "JOIN images i ON i.project_id = f.project_id AND i.hash = f.hash "
                f"WHERE +f.project_id = ? AND f.id IN ({','.join('?' * len(part))}) "
                "AND i.status = 'ok'", [project_id, *part])
        return sorted(out, key=lambda r: r["id"])

    def ambiguous_hashes(self, project_id: int) -> set[str]:
        """Content hashes whose usable copies sit in more than one class folder: such an image
        has no one truth (kept out of the hold-out, never a seed)."""
        return {r[0] for r in self.db.execute(
            "SELECT hash FROM images WHERE project_id = ? AND status = 'ok' GROUP BY hash "
            "HAVING count(DISTINCT known_class_id) > 1", [project_id]).fetchall()}

    def duplicate_images(self, project_id: int) -> list[dict]:
        """The usable images that have a usable byte-for-byte copy (the same content hash), in id
        order: rows {"id", "path", "hash", "split", "known_class_id"}. Usually a few of a
        project's rows: what a listing of copy groups, or a pass that must see each content once
        across chunks of rows, needs to know (a hash not among them occurs once)."""
        return self.query(
            "SELECT id, path, hash, split, known_class_id FROM images WHERE project_id = ? "
            "AND status = 'ok' AND hash IN (SELECT hash FROM images WHERE project_id = ? AND "
            "status = 'ok' GROUP BY hash HAVING count(*) > 1) ORDER BY id", [project_id, project_id])

    def image_hashes(self, project_id: int, image_ids: Sequence[int]) -> dict[int, str]:
        """{id: content hash} of the images `image_ids` of the project (read 500 at a time): the
        rows of a few images out of a large split, two columns each."""
        out: dict[int, str] = {}
        ids = [int(i) for i in image_ids]
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            # `+project_id`: SQLite would otherwise read the whole project along the covering
            # (project_id, hash) index instead of looking the ids up by primary key.
            out.update(self.db.execute(f"SELECT id, hash FROM images WHERE +project_id = ? AND id IN "
                                       f"({','.join('?' * len(part))})", [project_id, *part]).fetchall())
        return out

    # -- labels ---------------------------------------------------------------------------------

    def add_labels(self, project_id: int, labels: Sequence[tuple[int, str | int | None]],
                   annotator: str, source: str, origins: Sequence[str | None] | None = None,
                   undoes: Sequence[int | None] | None = None) -> list[int]:
        """Append one event per (image id, class name or id or None to retract), all in one
        transaction: either every label of the batch is stored or none is. `origins` says why
        each image was asked ("strategy", "control", "holdout", "grid"), where known. This is the
        system's own path (imports, seeds, replays, auto-accept); people's answers go through
        `answer` and `submit_drafts`, which keep conflicts."""
        if source not in LABEL_SOURCES:
            raise StoreError(f"label source must be one of {LABEL_SOURCES}, got '{source}'")
        if not annotator:
            raise StoreError("every label needs an annotator name")
        classes = self.classes(project_id)
        by_name = {c["name"]: c["id"] for c in classes}
        ids = set(by_name.values())
        now = time.time()
        events = []
        origins = list(origins) if origins is not None else [None] * len(labels)
        undoes = list(undoes) if undoes is not None else [None] * len(labels)
        for (image_id, cls), origin, undone in zip(labels, origins, undoes):
            if cls is None:
                class_id = None
            elif isinstance(cls, str):
                if cls not in by_name:
                    raise StoreError(f"class '{cls}' does not exist in this project "
                                     f"(classes: {', '.join(by_name)})")
                class_id = by_name[cls]
            else:
                if int(cls) not in ids:
                    raise StoreError(f"class id {cls} does not exist in this project")
                class_id = int(cls)
            events.append({"project_id": project_id, "image_id": int(image_id), "class_id": class_id,
                           "annotator": annotator, "source": source, "created_at": now,
                           "origin": origin, "undoes": undone})
        image_ids = sorted({e["image_id"] for e in events})
        with self.transaction():
            for start in range(0, len(image_ids), 500):
                chunk = image_ids[start:start + 500]
                found = {r[0] for r in self.db.execute(
                    f"SELECT id FROM images WHERE project_id = ? AND status = 'ok' AND id IN "
                    f"({','.join('?' * len(chunk))})", [project_id, *chunk]).fetchall()}
                missing = [i for i in chunk if i not in found]
                if missing:
                    raise StoreError(f"image id(s) {missing[:10]} are not usable images of this project")
            return [self._insert("label_events", e) for e in events]

    def current_labels(self, project_id: int, split: str | None = None,
                       up_to_event: int | None = None, source: str | None = None) -> dict[int, int]:
        """{image id: class id} from the latest event of each image (retracted ones left out);
        with `source`, only the labels whose latest event came from it."""
        sql = ("SELECT e.image_id, e.class_id FROM label_events e JOIN images i ON i.id = e.image_id "
               "WHERE e.id IN (SELECT max(id) FROM label_events WHERE project_id = ? {bound} "
               "GROUP BY image_id) AND e.class_id IS NOT NULL AND i.status = 'ok' {split} {source}")
        args: list = [project_id]
        bound = ""
        if up_to_event is not None:
            bound = "AND id <= ?"
            args.append(up_to_event)
        where_split = ""
        if split:
            where_split = "AND i.split = ?"
            args.append(split)
        where_source = ""
        if source:
            where_source = "AND e.source = ?"
            args.append(source)
        rows = self.db.execute(sql.format(bound=bound, split=where_split, source=where_source), args).fetchall()
        return dict(rows)

    def labeled_counts(self, project_id: int) -> dict[str, int]:
        """{split: usable images with a label in force}: `len(current_labels(project_id, split))`
        for every split at once, counted by the database."""
        return {r[0]: r[1] for r in self.db.execute(
            "SELECT i.split, count(*) FROM label_events e JOIN images i ON i.id = e.image_id "
            "WHERE e.id IN (SELECT max(id) FROM label_events WHERE project_id = ? GROUP BY image_id) "
            "AND e.class_id IS NOT NULL AND i.status = 'ok' GROUP BY i.split", [project_id]).fetchall()}

    def latest_events(self, project_id: int) -> dict[int, dict]:
        """{image id: its latest event} (retractions included)."""
        rows = self.query("SELECT * FROM label_events WHERE id IN (SELECT max(id) FROM label_events "
                          "WHERE project_id = ? GROUP BY image_id)", [project_id])
        return {r["image_id"]: r for r in rows}

    def last_event_id(self, project_id: int, exclude_sources: Sequence[str] = ()) -> int:
        sql, args = "SELECT max(id) FROM label_events WHERE project_id = ?", [project_id]
        if exclude_sources:
            sql += f" AND source NOT IN ({','.join('?' * len(exclude_sources))})"
            args += list(exclude_sources)
        return self._one(sql, args) or 0

    def has_events(self, project_id: int, source: str) -> bool:
        """Whether any label event of `source` was ever stored (one indexed row, not the log)."""
        return bool(self.query("SELECT 1 FROM label_events WHERE project_id = ? AND source = ? LIMIT 1",
                               [project_id, source]))

    def has_images(self, project_id: int, split: str) -> bool:
        """Whether the split holds any image that is not skipped (one row, not the split)."""
        return bool(self.query("SELECT 1 FROM images WHERE project_id = ? AND split = ? AND "
                               "status = 'ok' LIMIT 1", [project_id, split]))

    def label_events(self, project_id: int, image_id: int | None = None,
                     annotator: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM label_events WHERE project_id = ?", [project_id]
        if image_id is not None:
            sql += " AND image_id = ?"
            args.append(int(image_id))
        if annotator is not None:
            sql += " AND annotator = ?"
            args.append(annotator)
        return self.query(sql + " ORDER BY id", args)

    # -- leases and what each person was shown ------------------------------------------------

    def lease(self, project_id: int, image_ids: Sequence[int], annotator: str,
              seconds: float = 900, origins: Sequence[str] | None = None, limit: int | None = None,
              unlabeled: set[int] = frozenset()) -> list[int]:
        """Lease the images to `annotator` for `seconds`, skipping any another annotator holds or
        has a pending answer for, and those in `unlabeled` that got a label meanwhile
        (atomically: two annotators asking at once never both get one), at most `limit` of them.
        Each granted image counts as shown to them now. Returns those granted."""
        now = time.time()
        granted = []
        origins = list(origins) if origins is not None else [None] * len(image_ids)
        with self.transaction():
            back = self._one("SELECT coalesce(max(position), 0) FROM leases WHERE project_id = ? "
                             "AND annotator = ?", [project_id, annotator])
            for image_id, origin in zip(image_ids, origins):
                image_id = int(image_id)
                if limit is not None and len(granted) >= limit:
                    break
                if image_id in unlabeled:
                    force = self._in_force(project_id, image_id)
                    if force is not None and force["class_id"] is not None:
                        continue
                holder = self.db.execute(
                    "SELECT annotator, leased_at FROM leases WHERE project_id = ? AND image_id = ? "
                    "AND expires_at > ?", [project_id, image_id, now]).fetchone()
                if holder is not None and holder[0] != annotator:
                    continue
                if self._one("SELECT count(*) FROM drafts WHERE project_id = ? AND image_id = ? AND "
                             "annotator != ?", [project_id, image_id, annotator]):
                    continue
                if holder is not None:   # a renewal keeps its place and when it was first shown
                    self.db.execute("UPDATE leases SET expires_at = ? WHERE project_id = ? AND "
                                    "image_id = ?", [now + seconds, project_id, image_id])
                else:
                    back += 1
                    self._replace("leases", {
                        "project_id": project_id, "image_id": image_id, "annotator": annotator,
                        "leased_at": now, "expires_at": now + seconds, "origin": origin,
                        "position": back})
                    self._replace("shown", {"project_id": project_id, "image_id": image_id,
                                            "annotator": annotator, "shown_at": now, "skipped": 0})
                granted.append(image_id)
        return granted

    def leases(self, project_id: int, annotator: str | None = None) -> list[dict]:
        """Unexpired leases (of one annotator, or all), in window order."""
        sql, args = "SELECT * FROM leases WHERE project_id = ? AND expires_at > ?", [project_id, time.time()]
        if annotator is not None:
            sql += " AND annotator = ?"
            args.append(annotator)
        return self.query(sql + " ORDER BY position, leased_at, image_id", args)

    def renew_leases(self, project_id: int, annotator: str, seconds: float = 900) -> int:
        """Extend every unexpired lease of `annotator` (the page is still open)."""
        now = time.time()
        with self.transaction():
            return self.db.execute("UPDATE leases SET expires_at = ? WHERE project_id = ? AND "
                                   "annotator = ? AND expires_at > ?",
                                   [now + seconds, project_id, annotator, now]).rowcount

    def release(self, project_id: int, image_ids: Sequence[int], annotator: str) -> None:
        with self.transaction():
            for image_id in image_ids:
                self.db.execute("DELETE FROM leases WHERE project_id = ? AND image_id = ? AND annotator = ?",
                                [project_id, int(image_id), annotator])

    def move_to_front(self, project_id: int, image_id: int, annotator: str) -> None:
        with self.transaction():
            front = self._one("SELECT coalesce(min(position), 0) FROM leases WHERE project_id = ? "
                              "AND annotator = ?", [project_id, annotator])
            self.db.execute("UPDATE leases SET position = ? WHERE project_id = ? AND image_id = ? "
                            "AND annotator = ?", [front - 1, project_id, int(image_id), annotator])

    def shown_to(self, project_id: int, image_id: int, annotator: str) -> dict | None:
        rows = self.query("SELECT * FROM shown WHERE project_id = ? AND image_id = ? AND annotator = ?",
                          [project_id, int(image_id), annotator])
        return rows[0] if rows else None

    # -- answers: drafts, conflicts, submit, undo ----------------------------------------------

    def _receipt(self, project_id: int, annotator: str, uid: str | None, outcome: str) -> None:
        if uid:
            self.db.execute("INSERT INTO receipts (project_id, annotator, uid, created_at, outcome) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                            [project_id, annotator, uid, time.time(), outcome])

    def record_receipt(self, project_id: int, annotator: str, uid: str, outcome: str) -> None:
        with self.transaction():
            self._receipt(project_id, annotator, uid, outcome)

    def receipt(self, project_id: int, annotator: str, uid: str) -> dict | None:
        rows = self.query("SELECT * FROM receipts WHERE project_id = ? AND annotator = ? AND uid = ?",
                          [project_id, annotator, uid])
        return rows[0] if rows else None

    def _others_since(self, project_id: int, image_id: int, annotator: str, since: float) -> dict | None:
        rows = self.query("SELECT * FROM label_events WHERE project_id = ? AND image_id = ? AND "
                          "annotator != ? AND created_at > ? ORDER BY id DESC LIMIT 1",
                          [project_id, image_id, annotator, since])
        return rows[0] if rows else None

    def _in_force(self, project_id: int, image_id: int) -> dict | None:
        rows = self.query("SELECT * FROM label_events WHERE project_id = ? AND image_id = ? "
                          "ORDER BY id DESC LIMIT 1", [project_id, image_id])
        return rows[0] if rows else None

    def _conflict(self, project_id: int, image_id: int, annotator: str, class_id: int | None,
                  reason: str) -> int:
        in_force = self._in_force(project_id, image_id)
        return self._insert("conflicts", {
            "project_id": project_id, "image_id": image_id, "annotator": annotator,
            "class_id": class_id, "reason": reason,
            "in_force_event_id": in_force["id"] if in_force else None, "created_at": time.time(),
            "status": "open"})

    def answer(self, project_id: int, annotator: str, image_id: int, class_id: int | None,
               uid: str | None = None, lease_seconds: float = 900, flag: bool = False) -> Outcome:
        """Record `annotator`'s answer for `image_id` (a class id, or None to skip; `flag`: a skip
        that flags the image as unclear / none of the classes) as a draft, in one transaction;
        answering an image again while its draft is pending replaces the draft. Refused
        (StoreError) for an image never shown to them. Kept as a conflict, not as the label, when
        the image is someone else's now: leased to another, answered by another, or labeled by
        another since it was shown to this person. An expired lease that
        nobody else took is simply renewed. A `uid` already stored returns "duplicate"."""
        image_id = int(image_id)
        now = time.time()
        with self.transaction():
            if uid and self.receipt(project_id, annotator, uid):
                return Outcome("duplicate", image_id, "already stored")
            image = self.image(project_id, image_id)
            if image["status"] != "ok":
                raise StoreError(f"image {image_id} ('{image['path']}') was skipped at import: "
                                 f"{image['reason']}")
            if class_id is not None and class_id not in {c["id"] for c in self.classes(project_id)}:
                raise StoreError(f"class id {class_id} does not exist in this project")
            shown = self.shown_to(project_id, image_id, annotator)
            if shown is None:
                raise StoreError(f"image {image_id} was never shown to {annotator}: an answer must "
                                 "be for the image on your screen")
            holder = self.db.execute("SELECT annotator FROM leases WHERE project_id = ? AND "
                                     "image_id = ? AND expires_at > ?", [project_id, image_id, now]
                                     ).fetchone()
            other_draft = self._one("SELECT annotator FROM drafts WHERE project_id = ? AND image_id = ? "
                                    "AND annotator != ?", [project_id, image_id, annotator])
            since = self._others_since(project_id, image_id, annotator, shown["shown_at"])
            reason = None
            if holder is not None and holder[0] != annotator:
                reason = f"your lease expired and the image is now with {holder[0]}"
            elif other_draft:
                reason = f"{other_draft} answered it first"
            elif since is not None:
                reason = f"{since['annotator']} labeled it after it was shown to you"
            if reason is not None:
                if class_id is None or flag:
                    self._receipt(project_id, annotator, uid, "dropped")
                    return Outcome("dropped", image_id, f"skip of image {image_id} not kept: {reason}")
                self._conflict(project_id, image_id, annotator, class_id, reason)
                self._receipt(project_id, annotator, uid, "conflict")
                return Outcome("conflict", image_id, f"image {image_id}: {reason}; your answer is kept "
                                                     "as a conflict for the lead, not as the label")
            if holder is None:
                self.db.execute(
                    _replace_sql("leases", ("project_id", "image_id", "annotator", "leased_at",
                                            "expires_at", "origin", "position"),
                                 "?, ?, ?, ?, ?, (SELECT origin FROM queue_items WHERE project_id = ? "
                                 "AND image_id = ?), (SELECT coalesce(max(position), 0) + 1 FROM "
                                 "leases WHERE project_id = ? AND annotator = ?)"),
                    [project_id, image_id, annotator, shown["shown_at"], now + lease_seconds,
                     project_id, image_id, project_id, annotator])
            if flag:
                class_id = None
            self.db.execute(
                _replace_sql("drafts", ("project_id", "annotator", "image_id", "class_id", "skipped",
                                        "created_at", "origin", "shown_at", "flagged"),
                             "?, ?, ?, ?, ?, ?, (SELECT origin FROM leases WHERE project_id = ? AND "
                             "image_id = ?), ?, ?"),
                [project_id, annotator, image_id, class_id, int(class_id is None), now,
                 project_id, image_id, shown["shown_at"], int(flag)])
            self.db.execute("UPDATE leases SET expires_at = ? WHERE project_id = ? AND annotator = ? "
                            "AND expires_at < ?", [now + lease_seconds, project_id, annotator,
                                                   now + lease_seconds])
            self._receipt(project_id, annotator, uid, "draft")
        return Outcome("draft", image_id)

    def drafts(self, project_id: int, annotator: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM drafts WHERE project_id = ?", [project_id]
        if annotator is not None:
            sql += " AND annotator = ?"
            args.append(annotator)
        return self.query(sql + f" ORDER BY created_at, {self.db.arrival}", args)

    def recent_answers(self, project_id: int, annotator: str, n: int = 10) -> list[dict]:
        """`annotator`'s last `n` answers, newest first, one per image: pending ones (drafts,
        skips and flags included) and labels of theirs that stand (not undone). Each {"image_id",
        "class_id", "skipped", "flagged", "submitted", "created_at"}."""
        rows = self.db.execute(
            "SELECT image_id, class_id, skipped, coalesce(flagged, 0) AS flagged, 0 AS submitted, "
            "created_at FROM drafts WHERE project_id = :p AND annotator = :a "
            "UNION ALL SELECT image_id, class_id, 0, 0, 1, created_at FROM label_events e WHERE "
            "project_id = :p AND annotator = :a AND source = 'human' AND undoes IS NULL AND "
            "class_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM label_events u WHERE "
            "u.project_id = e.project_id AND u.undoes = e.id) "
            "ORDER BY created_at DESC LIMIT :n", {"p": project_id, "a": annotator, "n": 4 * n}
        ).fetchall()
        names = ("image_id", "class_id", "skipped", "flagged", "submitted", "created_at")
        seen, recent = set(), []
        for row in (dict(zip(names, r)) for r in rows):
            if row["image_id"] not in seen:
                seen.add(row["image_id"])
                recent.append(row)
        return recent[:n]

    def stale_draft_annotators(self, project_id: int, older_than: float) -> list[str]:
        """Annotators whose oldest pending answer is older than `older_than` seconds."""
        return [r["annotator"] for r in self.query(
            "SELECT annotator FROM drafts WHERE project_id = ? GROUP BY annotator "
            "HAVING min(created_at) < ?", [project_id, time.time() - older_than])]

    def submit_drafts(self, project_id: int, annotator: str, source: str = "human") -> dict:
        """Turn the annotator's drafts into label events, all in one transaction, and free their
        images. Skips free their images unlabeled (and keep them from coming back to this person);
        a flagged skip also goes to the lead (`flags`) and out of everyone's queue.
        An answer for an image someone labeled since it was shown, or one that disagrees with
        another person's label in force (an overlap or a third opinion), is kept as a conflict.
        Returns {"labeled": [image ids], "conflicts": [image ids], "flagged": [image ids]}."""
        labeled, conflicts, flagged = [], [], []
        with self.transaction():
            drafts = self.drafts(project_id, annotator)
            for d in drafts:
                image_id = d["image_id"]
                if d["skipped"]:
                    self.db.execute("UPDATE shown SET skipped = 1, skipped_at = ? WHERE project_id = ? "
                                    "AND image_id = ? AND annotator = ?",
                                    [time.time(), project_id, image_id, annotator])
                    if d.get("flagged"):
                        self._replace("flags", {"project_id": project_id, "image_id": image_id,
                                                "annotator": annotator, "created_at": time.time(),
                                                "status": "open"})
                        flagged.append(image_id)
                    continue
                since = self._others_since(project_id, image_id, annotator, d["shown_at"] or 0)
                if since is not None:
                    self._conflict(project_id, image_id, annotator, d["class_id"],
                                   f"{since['annotator']} labeled it after it was shown to you")
                    conflicts.append(image_id)
                    continue
                in_force = self._in_force(project_id, image_id)
                origin = d["origin"]
                other_opinion = (in_force is not None and in_force["class_id"] is not None
                                 and in_force["annotator"] != annotator
                                 and in_force["source"] in OPINION_SOURCES)
                if other_opinion and in_force["class_id"] != d["class_id"]:
                    open_ = self.query("SELECT * FROM conflicts WHERE project_id = ? AND image_id = ? "
                                       "AND status = 'open'", [project_id, image_id])
                    assigned = self._one("SELECT annotator FROM assignments WHERE project_id = ? AND "
                                         "image_id = ?", [project_id, image_id])
                    if assigned == annotator and any(c["class_id"] == d["class_id"] for c in open_):
                        # A third opinion siding with a conflicting answer settles it.
                        event = self._insert("label_events", {
                            "project_id": project_id, "image_id": image_id, "class_id": d["class_id"],
                            "annotator": annotator, "source": source, "created_at": time.time(),
                            "origin": "third-opinion"})
                        self._resolve(project_id, image_id, annotator, f"third opinion by {annotator}",
                                      event)
                        labeled.append(image_id)
                        continue
                    self._conflict(project_id, image_id, annotator, d["class_id"],
                                   f"disagrees with {in_force['annotator']}'s label")
                    conflicts.append(image_id)
                    continue
                event = self._insert("label_events", {
                    "project_id": project_id, "image_id": image_id, "class_id": d["class_id"],
                    "annotator": annotator, "source": source, "created_at": time.time(),
                    "origin": "overlap" if other_opinion else origin})
                if other_opinion and self._one("SELECT annotator FROM assignments WHERE project_id = ? "
                                               "AND image_id = ?", [project_id, image_id]) == annotator:
                    self._resolve(project_id, image_id, annotator,
                                  f"third opinion by {annotator} kept the label", event)
                labeled.append(image_id)
            self.db.execute("DELETE FROM drafts WHERE project_id = ? AND annotator = ?",
                            [project_id, annotator])
            self.release(project_id, [d["image_id"] for d in drafts], annotator)
        return {"labeled": labeled, "conflicts": conflicts, "flagged": flagged}

    def delete_draft(self, project_id: int, annotator: str, image_id: int) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM drafts WHERE project_id = ? AND annotator = ? AND image_id = ?",
                            [project_id, annotator, int(image_id)])

    def undo_last(self, project_id: int, annotator: str, image_id: int | None = None,
                  lease_seconds: float = 900) -> int | None:
        """Take back `annotator`'s last answer (only their own): an unsubmitted one is dropped; a
        submitted one is undone by a new event restoring the label before it (the log is never
        rewritten), refused if someone else labeled the image since. Repeated calls walk back
        through their answers. With `image_id`, refuse unless that is the answer to take back.
        The image goes back to the front of their window. Returns it, or None if nothing is left."""
        with self.transaction():
            drafts = self.drafts(project_id, annotator)
            if drafts:
                last = drafts[-1]
                if image_id is not None and last["image_id"] != int(image_id):
                    raise StoreError(f"your last answer is for image {last['image_id']}, not {image_id}")
                self.db.execute("DELETE FROM drafts WHERE project_id = ? AND annotator = ? AND image_id = ?",
                                [project_id, annotator, last["image_id"]])
                self.db.execute("UPDATE shown SET skipped = 0 WHERE project_id = ? AND image_id = ? "
                                "AND annotator = ?", [project_id, last["image_id"], annotator])
                self.move_to_front(project_id, last["image_id"], annotator)
                return last["image_id"]
            standing = self.query(
                "SELECT * FROM label_events e WHERE project_id = ? AND annotator = ? AND source = 'human' "
                "AND undoes IS NULL AND NOT EXISTS (SELECT 1 FROM label_events u WHERE u.project_id = "
                "e.project_id AND u.undoes = e.id) ORDER BY id DESC LIMIT 1", [project_id, annotator])
            skip = self.query("SELECT * FROM shown WHERE project_id = ? AND annotator = ? AND "
                              "skipped = 1 ORDER BY skipped_at DESC LIMIT 1", [project_id, annotator])
            if skip and (not standing or skip[0]["skipped_at"] > standing[0]["created_at"]):
                target = skip[0]["image_id"]      # the last answer was a submitted skip
                if image_id is not None and target != int(image_id):
                    raise StoreError(f"your last answer is for image {target}, not {image_id}")
                self.db.execute("UPDATE shown SET skipped = 0 WHERE project_id = ? AND image_id = ? "
                                "AND annotator = ?", [project_id, target, annotator])
                self.db.execute("DELETE FROM flags WHERE project_id = ? AND image_id = ? AND "
                                "annotator = ? AND status = 'open'", [project_id, target, annotator])
                if not self.lease(project_id, [target], annotator, lease_seconds):
                    raise StoreError(f"image {target} is with someone else now; undo was not done")
                self.move_to_front(project_id, target, annotator)
                return target
            if not standing:
                return None
            event = standing[0]
            target = event["image_id"]
            if image_id is not None and target != int(image_id):
                raise StoreError(f"your last answer is for image {target}, not {image_id}")
            latest = self._in_force(project_id, target)
            if latest["id"] != event["id"]:
                raise StoreError(f"image {target} was labeled by {latest['annotator']} after you: undo "
                                 "would remove their label, so it was not done (ask the lead)")
            holder = self.db.execute("SELECT annotator FROM leases WHERE project_id = ? AND image_id = ? "
                                     "AND expires_at > ?", [project_id, target, time.time()]).fetchone()
            if holder is not None and holder[0] != annotator:
                raise StoreError(f"image {target} is with {holder[0]} now; undo was not done")
            before = self.query("SELECT class_id FROM label_events WHERE project_id = ? AND image_id = ? "
                                "AND id < ? ORDER BY id DESC LIMIT 1", [project_id, target, event["id"]])
            self._insert("label_events", {
                "project_id": project_id, "image_id": target,
                "class_id": before[0]["class_id"] if before else None, "annotator": annotator,
                "source": "human", "created_at": time.time(), "origin": "undo", "undoes": event["id"]})
            self.lease(project_id, [target], annotator, lease_seconds, origins=[event["origin"]])
            self.move_to_front(project_id, target, annotator)
            return target

    def retract_own(self, project_id: int, annotator: str, image_id: int) -> int:
        """Retract `annotator`'s own label in force on `image_id` (a new event with no class);
        refused when the label in force is someone else's."""
        with self.transaction():
            latest = self._in_force(project_id, int(image_id))
            if latest is None or latest["class_id"] is None:
                raise StoreError(f"image {image_id} has no label to retract")
            if latest["annotator"] != annotator:
                raise StoreError(f"the label of image {image_id} was given by {latest['annotator']}, "
                                 "not you; only its author or the lead (through a conflict) changes it")
            return self._insert("label_events", {
                "project_id": project_id, "image_id": int(image_id), "class_id": None,
                "annotator": annotator, "source": "human", "created_at": time.time(),
                "origin": "retract"})

    # -- flags: images an annotator could not place --------------------------------------------

    def flags(self, project_id: int, status: str | None = "open") -> list[dict]:
        """Flagged images ("unclear / none of the classes"), newest first, with their path."""
        sql = ("SELECT g.*, i.path FROM flags g JOIN images i ON i.id = g.image_id "
               "WHERE g.project_id = ?")
        args: list = [project_id]
        if status:
            sql += " AND g.status = ?"
            args.append(status)
        return self.query(sql + " ORDER BY g.created_at DESC, g.image_id", args)

    def resolve_flag(self, project_id: int, image_id: int, lead: str) -> int:
        """A lead looked at a flagged image: it goes back to the queue (never to its flagger)."""
        with self.transaction():
            return self.db.execute("UPDATE flags SET status = 'resolved', resolved_by = ?, "
                                   "resolved_at = ? WHERE project_id = ? AND image_id = ? AND "
                                   "status = 'open'", [lead, time.time(), project_id, int(image_id)]
                                   ).rowcount

    # -- conflicts and assignments ------------------------------------------------------------

    def conflicts(self, project_id: int, status: str | None = "open",
                  annotator: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM conflicts WHERE project_id = ?", [project_id]
        if status:
            sql += " AND status = ?"
            args.append(status)
        if annotator:
            sql += " AND annotator = ?"
            args.append(annotator)
        return self.query(sql + " ORDER BY id", args)

    def _resolve(self, project_id: int, image_id: int, by: str, resolution: str,
                 event_id: int | None) -> None:
        self.db.execute("UPDATE conflicts SET status = 'resolved', resolved_by = ?, resolved_at = ?, "
                        "resolution = ?, resolution_event_id = ? WHERE project_id = ? AND image_id = ? "
                        "AND status = 'open'", [by, time.time(), resolution, event_id, project_id, image_id])
        self.db.execute("DELETE FROM assignments WHERE project_id = ? AND image_id = ?", [project_id, image_id])

    def resolve_conflict(self, project_id: int, image_id: int, lead: str, class_id: int | None,
                         keep: bool = False) -> int | None:
        """Settle every open conflict of `image_id`: keep the label in force, or set `class_id`
        (one of the answers, or the lead's own) as a new event with source "review"."""
        with self.transaction():
            if not self.query("SELECT 1 FROM conflicts WHERE project_id = ? AND image_id = ? AND "
                              "status = 'open'", [project_id, int(image_id)]):
                raise StoreError(f"image {image_id} has no open conflict")
            event = None
            if not keep:
                if class_id not in {c["id"] for c in self.classes(project_id)}:
                    raise StoreError(f"class id {class_id} does not exist in this project")
                event = self._insert("label_events", {
                    "project_id": project_id, "image_id": int(image_id), "class_id": class_id,
                    "annotator": lead, "source": "review", "created_at": time.time(),
                    "origin": "conflict"})
            self._resolve(project_id, int(image_id), lead, "kept the label in force" if keep else
                          f"set by {lead}", event)
            return event

    def assign(self, project_id: int, image_id: int, annotator: str, by: str) -> None:
        """Send an image with an open conflict to `annotator` for a third opinion."""
        with self.transaction():
            involved = {c["annotator"] for c in self.conflicts(project_id) if c["image_id"] == int(image_id)}
            if not involved:
                raise StoreError(f"image {image_id} has no open conflict")
            in_force = self._in_force(project_id, int(image_id))
            if in_force is not None:
                involved.add(in_force["annotator"])
            if annotator in involved:
                raise StoreError(f"{annotator} already answered image {image_id}; send it to a third person")
            self._replace("assignments", {"project_id": project_id, "image_id": int(image_id),
                                          "annotator": annotator, "assigned_by": by,
                                          "created_at": time.time()})

    def assignments(self, project_id: int, annotator: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM assignments WHERE project_id = ?", [project_id]
        if annotator:
            sql += " AND annotator = ?"
            args.append(annotator)
        return self.query(sql + " ORDER BY created_at", args)

    # -- the queue: ranked in the background, handed out by a read -----------------------------

    def replace_queue(self, project_id: int, rows: Sequence[tuple[int, str, int | None]]) -> None:
        """Set the project's ranked queue: (image id, origin, model version) most wanted first."""
        now = time.time()
        with self.transaction():
            self.db.execute("DELETE FROM queue_items WHERE project_id = ?", [project_id])
            self._insert_all("queue_items", (
                {"project_id": project_id, "image_id": int(i), "position": k, "origin": o,
                 "model_version": v, "created_at": now} for k, (i, o, v) in enumerate(rows)))

    def queue_size(self, project_id: int) -> int:
        return self._one("SELECT count(*) FROM queue_items WHERE project_id = ?", [project_id])

    def queue_available(self, project_id: int) -> int:
        """Queued images nobody holds and nobody labeled yet."""
        return self._one(
            "SELECT count(*) FROM queue_items q WHERE q.project_id = ? "
            "AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.project_id = q.project_id AND "
            "l.image_id = q.image_id AND l.expires_at > ?) "
            "AND NOT EXISTS (SELECT 1 FROM drafts d WHERE d.project_id = q.project_id AND "
            "d.image_id = q.image_id) "
            "AND NOT EXISTS (SELECT 1 FROM label_events e WHERE e.project_id = q.project_id AND "
            "e.image_id = q.image_id AND e.id = (SELECT max(id) FROM label_events f WHERE "
            "f.project_id = q.project_id AND f.image_id = q.image_id) AND e.class_id IS NOT NULL)",
            [project_id, time.time()])

    def queue_version(self, project_id: int) -> int | None:
        return self._one("SELECT max(model_version) FROM queue_items WHERE project_id = ?", [project_id])

    def lease_next(self, project_id: int, annotator: str, n: int, seconds: float = 900,
                   overlap_share: float = 0.0, overlap_seed: int = 0) -> list[int]:
        """Lease up to `n` more images to `annotator`, in this order: images a lead sent to them,
        second opinions wanted (a share `overlap_share` of human labels, chosen by image id), the
        ranked queue, then any unlabeled image at random (the queue ran out before the next
        ranking). Never one leased to or answered by another person, labeled already (except
        for a second opinion), or one this person skipped. One transaction."""
        if n <= 0:
            return []
        now = time.time()
        free = ("i.project_id = ? AND i.status = 'ok' "
                "AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.project_id = i.project_id AND "
                "l.image_id = i.id AND l.expires_at > ?) "
                "AND NOT EXISTS (SELECT 1 FROM drafts d WHERE d.project_id = i.project_id AND d.image_id = i.id) "
                "AND NOT EXISTS (SELECT 1 FROM shown s WHERE s.project_id = i.project_id AND "
                "s.image_id = i.id AND s.annotator = ? AND s.skipped = 1) "
                "AND NOT EXISTS (SELECT 1 FROM flags g WHERE g.project_id = i.project_id AND "
                "g.image_id = i.id AND (g.status = 'open' OR g.annotator = ?)) ")
        unlabeled = ("NOT EXISTS (SELECT 1 FROM label_events e WHERE e.project_id = i.project_id AND "
                     "e.image_id = i.id AND e.id = (SELECT max(id) FROM label_events f WHERE "
                     "f.project_id = i.project_id AND f.image_id = i.id) AND e.class_id IS NOT NULL) ")
        # Never ask a person twice about an image they answered: an opinion of theirs (a label
        # event) rules out second opinions, a kept conflict rules out everything.
        answered = ("NOT EXISTS (SELECT 1 FROM conflicts c WHERE c.project_id = i.project_id AND "
                    "c.image_id = i.id AND c.annotator = ?) ")
        opinion = ("NOT EXISTS (SELECT 1 FROM label_events e WHERE e.project_id = i.project_id AND "
                   "e.image_id = i.id AND e.annotator = ?) AND " + answered)
        base = [project_id, now, annotator, annotator]
        # Candidates are read outside the write lock (with slack: some may be taken meanwhile);
        # `lease` then grants up to n of them in one short transaction, checking each again.
        slack = 2 * n
        picked: list[tuple[int, str]] = []

        def take(sql: str, args: list) -> None:
            seen = {p for p, _ in picked}
            for image_id, origin in self.db.execute(sql + " LIMIT ?", [*args, slack]).fetchall():
                if len(picked) < slack and image_id not in seen:
                    picked.append((image_id, origin))
                    seen.add(image_id)

        # CROSS JOIN: SQLite takes the tables in the order written, so the few assignments or
        # queued images drive the query, not a scan of every image (the join's condition is in
        # WHERE: PostgreSQL allows no ON after CROSS JOIN, and plans the join itself).
        take(f"SELECT i.id, 'third-opinion' FROM assignments a CROSS JOIN images i WHERE a.project_id "
             f"= i.project_id AND a.image_id = i.id AND {free} AND a.annotator = ? AND {opinion} "
             f"ORDER BY a.created_at", [*base, annotator, annotator, annotator])
        if overlap_share > 0 and len(picked) < slack:
            # Second opinions on human labels: the share is chosen by a hash of the image id,
            # so every process agrees on which images get one.
            take(f"SELECT i.id, 'overlap' FROM images i WHERE {free} AND {opinion} AND "
                 "((i.id * 2654435761 + ?) % 4294967296) < ? AND (SELECT count(DISTINCT annotator) "
                 "FROM label_events e WHERE e.project_id = i.project_id AND e.image_id = i.id AND "
                 "e.source = 'human') = 1 AND EXISTS (SELECT 1 FROM label_events e WHERE "
                 "e.project_id = i.project_id AND e.image_id = i.id AND e.source = 'human' AND "
                 "e.class_id IS NOT NULL AND e.id = (SELECT max(id) FROM label_events f WHERE "
                 "f.project_id = i.project_id AND f.image_id = i.id)) "
                 "ORDER BY (i.id * 2654435761 + ?) % 4294967296",   # not folder order
                 [*base, annotator, annotator, overlap_seed, int(overlap_share * 4294967296),
                  overlap_seed + 1])
        opinions = {p for p, _ in picked}
        if len(picked) < slack:
            take(f"SELECT i.id, q.origin FROM queue_items q CROSS JOIN images i WHERE q.project_id = "
                 f"i.project_id AND q.image_id = i.id AND {free} AND {unlabeled} AND {answered} "
                 f"ORDER BY q.position", [*base, annotator])
        if len(picked) < n:
            picked += [(i, "fallback") for i in self._random_free(
                project_id, annotator, slack - len(picked), {p for p, _ in picked})]
        if not picked:
            return []
        # The batch handed out now goes in a random order (seeded per lease), never in the
        # queue's or the folder's: an order that follows the classes would give the answer away.
        head = list(picked[:n])
        np.random.default_rng([project_id, time.time_ns() % 2**63]).shuffle(head)
        picked = head + picked[n:]
        return self.lease(project_id, [p for p, _ in picked], annotator, seconds,
                          origins=[o for _, o in picked], limit=n,
                          unlabeled={p for p, _ in picked} - opinions)

    def _random_free(self, project_id: int, annotator: str, k: int, exclude: set[int]) -> list[int]:
        """Up to `k` unlabeled images nobody holds, at random (the queue ran out before the next
        ranking): sets in Python, not a sort of the whole table by random() under the write lock."""
        labeled = set(self.current_labels(project_id))
        taken = self.taken_image_ids(project_id)
        mine = {r[0] for r in self.db.execute(
            "SELECT image_id FROM shown WHERE project_id = ? AND annotator = ? AND skipped = 1 "
            "UNION SELECT image_id FROM conflicts WHERE project_id = ? AND annotator = ? "
            "UNION SELECT image_id FROM flags WHERE project_id = ? AND (status = 'open' OR annotator = ?)",
            [project_id, annotator, project_id, annotator, project_id, annotator]).fetchall()}
        ids = [r[0] for r in self.db.execute("SELECT id FROM images WHERE project_id = ? AND "
                                             "status = 'ok'", [project_id]).fetchall()]
        free = [i for i in ids if i not in labeled and i not in taken and i not in mine
                and i not in exclude]
        rng = np.random.default_rng()
        return [free[j] for j in rng.permutation(len(free))[:k]]

    def unlabeled_count(self, project_id: int) -> int:
        return self._one("SELECT count(*) FROM images i WHERE i.project_id = ? AND i.status = 'ok' AND "
                         "NOT EXISTS (SELECT 1 FROM label_events e WHERE e.project_id = i.project_id "
                         "AND e.image_id = i.id AND e.id = (SELECT max(id) FROM label_events f WHERE "
                         "f.project_id = i.project_id AND f.image_id = i.id) AND e.class_id IS NOT NULL)",
                         [project_id])

    def progress(self, project_id: int, annotator: str, since: float = 0.0) -> dict:
        """Where labeling stands, in one read (one statement, so every figure is of the same
        moment): `left` (usable images with no label and no open flag), `mine` (images whose
        label in force is `annotator`'s), `mine_since` (of those, labeled after `since`),
        `team` (labels in force in the training pool given by people: seeds, answers, reviews,
        as the sidebar counts them), `pending` (my answers not submitted yet),
        `flagged` (open flags)."""
        in_force = ("SELECT e.* FROM label_events e WHERE e.project_id = :p AND e.class_id IS NOT NULL "
                    "AND e.id = (SELECT max(id) FROM label_events f WHERE f.project_id = :p AND "
                    "f.image_id = e.image_id)")
        row = self.db.execute(
            f"WITH force AS ({in_force}) SELECT "
            "(SELECT count(*) FROM images i WHERE i.project_id = :p AND i.status = 'ok' AND NOT EXISTS "
            " (SELECT 1 FROM force WHERE force.image_id = i.id) AND NOT EXISTS (SELECT 1 FROM flags g "
            " WHERE g.project_id = :p AND g.image_id = i.id AND g.status = 'open')), "
            "(SELECT count(*) FROM force WHERE annotator = :a AND source = 'human'), "
            "(SELECT count(*) FROM force WHERE annotator = :a AND source = 'human' AND created_at > :s), "
            "(SELECT count(*) FROM force JOIN images i ON i.id = force.image_id WHERE "
            " i.split = 'pool' AND i.status = 'ok' AND force.source != 'auto'), "
            "(SELECT count(*) FROM drafts WHERE project_id = :p AND annotator = :a), "
            "(SELECT count(*) FROM flags WHERE project_id = :p AND status = 'open')",
            {"p": project_id, "a": annotator, "s": since}).fetchone()
        return dict(zip(("left", "mine", "mine_since", "team", "pending", "flagged"), row))

    def taken_image_ids(self, project_id: int, except_annotator: str | None = None) -> set[int]:
        """Images someone holds now: an unexpired lease or a pending answer (of anyone but
        `except_annotator`)."""
        now = time.time()
        rows = self.db.execute("SELECT image_id FROM leases WHERE project_id = ? AND expires_at > ? "
                               "AND annotator != ? UNION SELECT image_id FROM drafts WHERE "
                               "project_id = ? AND annotator != ?",
                               [project_id, now, except_annotator or "", project_id,
                                except_annotator or ""]).fetchall()
        return {r[0] for r in rows}

    # -- audits of auto-accept ----------------------------------------------------------------

    def add_audits(self, project_id: int, rows: Sequence[dict]) -> None:
        now = time.time()
        with self.transaction():
            self._insert_all("audits", ({"project_id": project_id, "created_at": now, **r} for r in rows))

    def audits(self, project_id: int) -> list[dict]:
        return self.query("SELECT * FROM audits WHERE project_id = ? ORDER BY created_at, image_id",
                          [project_id])

    # -- the training lease: one trainer per project -------------------------------------------

    def acquire_training(self, project_id: int, owner: str, seconds: float = 120) -> bool:
        """Take (or renew) the project's training lease unless another live owner holds it. An
        owner named "host:pid:..." whose process on this host is gone holds nothing (a killed
        trainer must not block training until its lease runs out)."""
        now = time.time()
        with self.transaction():
            row = self.db.execute("SELECT owner, expires_at FROM training_lease WHERE project_id = ?",
                                  [project_id]).fetchone()
            if row is not None and row[0] != owner and row[1] > now and owner_alive(row[0]):
                return False
            self._replace("training_lease", {"project_id": project_id, "owner": owner,
                                             "expires_at": now + seconds})
            return True

    def release_training(self, project_id: int, owner: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM training_lease WHERE project_id = ? AND owner = ?",
                            [project_id, owner])

    def holds_training(self, project_id: int, owner: str) -> bool:
        return bool(self._one("SELECT count(*) FROM training_lease WHERE project_id = ? AND owner = ? "
                              "AND expires_at > ?", [project_id, owner, time.time()]))

    # -- model versions and evaluations ---------------------------------------------------------

    def publish_version(self, project_id: int, owner: str | None, staged: Path, fields: dict,
                        evaluation: dict | None = None, train_ids: Sequence[int] = (),
                        force: bool = False) -> dict | None:
        """Publish a trained head, all in one transaction: check `owner` still holds the training
        lease and that the head saw more labels than the newest version (with `force`, as many),
        number the version, move the staged weights file to its final name (which carries that
        number), store the row and its evaluation. Returns the row, or None when the result is
        stale (discarded: its staged file is removed)."""
        staged = Path(staged)
        final = None
        try:
            with self.transaction():
                if owner is not None and not self.holds_training(project_id, owner):
                    return None
                newest = self._one("SELECT max(last_event_id) FROM model_versions WHERE project_id = ?",
                                   [project_id])
                if newest is not None and (fields["last_event_id"] < newest or
                                           (fields["last_event_id"] == newest and not force)):
                    return None
                version = self._one("SELECT coalesce(max(version), 0) + 1 FROM model_versions "
                                    "WHERE project_id = ?", [project_id])
                final = staged.parent / f"v{version:05d}-{uuid.uuid4().hex[:12]}.npz"
                os.replace(staged, final)
                row = {"project_id": project_id, "version": version, "created_at": time.time(),
                       **fields, "weights_path": str(final),
                       "train_ids": zlib.compress(np.asarray(train_ids, np.int64).tobytes())}
                if isinstance(row.get("class_counts"), dict):
                    row["class_counts"] = json.dumps(row["class_counts"])
                row["id"] = self._insert("model_versions", row)
                if evaluation is not None:
                    row["evaluation_id"] = self._insert_evaluation(project_id, row["id"], **evaluation)
        except BaseException:
            if final is not None and final.exists():
                final.unlink()    # the row was rolled back: no weights without their row
            raise
        finally:
            if staged.exists():
                staged.unlink()
        row.pop("train_ids")
        return row

    def add_model_version(self, project_id: int, **fields) -> dict:
        """A version row for weights written elsewhere (tests and tools; the trainer publishes
        with `publish_version`)."""
        with self.transaction():
            version = self._one("SELECT coalesce(max(version), 0) + 1 FROM model_versions "
                                "WHERE project_id = ?", [project_id])
            row = {"project_id": project_id, "version": version, "created_at": time.time(), **fields}
            if isinstance(row.get("class_counts"), dict):
                row["class_counts"] = json.dumps(row["class_counts"])
            row["id"] = self._insert("model_versions", row)
        return row

    _VERSION_COLUMNS = ("id, project_id, version, created_at, n_labels, last_event_id, class_counts, "
                        "train_seconds, weights_path, backbone, n_auto")

    def model_versions(self, project_id: int) -> list[dict]:
        return self.query(f"SELECT {self._VERSION_COLUMNS} FROM model_versions WHERE project_id = ? "
                          "ORDER BY version", [project_id])

    def latest_model_version(self, project_id: int) -> dict | None:
        rows = self.query(f"SELECT {self._VERSION_COLUMNS} FROM model_versions WHERE project_id = ? "
                          "ORDER BY version DESC LIMIT 1", [project_id])
        return rows[0] if rows else None

    def trained_ids(self, model_version_id: int) -> np.ndarray:
        return _ids(self._one("SELECT train_ids FROM model_versions WHERE id = ?", [model_version_id]))

    def versions_without_evaluation(self, project_id: int) -> list[dict]:
        return self.query(f"SELECT {self._VERSION_COLUMNS} FROM model_versions m WHERE project_id = ? "
                          "AND NOT EXISTS (SELECT 1 FROM evaluations e WHERE e.model_version_id = m.id) "
                          "ORDER BY version", [project_id])

    def weights_paths(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT weights_path FROM model_versions").fetchall()}

    # -- fine-tuned backbones -------------------------------------------------------------------

    UNFINISHED_TUNING = ("tuning", "embedding")

    def claim_tuning(self, project_id: int, owner: str, fields: dict,
                     stale_seconds: float = 600) -> dict:
        """Take the project's fine-tuning job: the unfinished one whose owner is gone or silent
        for `stale_seconds` (resumed where it stopped), else a new row made of `fields`. A job
        still run by a live owner is refused with a StoreError that says how far it got."""
        now = time.time()
        with self.transaction():
            rows = self.query("SELECT * FROM backbone_versions WHERE project_id = ? AND status IN "
                              "(?, ?) ORDER BY id DESC LIMIT 1", [project_id, *self.UNFINISHED_TUNING])
            if rows:
                row = rows[0]
                if row["owner"] != owner and owner_alive(row["owner"]) and row["updated_at"] > now - stale_seconds:
                    raise StoreError(f"a fine-tuning of this project is already running ({row['status']}, "
                                     f"{row['embedded'] or 0:,} of {row['total'] or 0:,} images embedded, "
                                     f"by {row['owner']}); wait for it to finish")
                self.db.execute("UPDATE backbone_versions SET owner = ?, updated_at = ? WHERE id = ?",
                                [owner, now, row["id"]])
                return {**row, "owner": owner, "updated_at": now, "resumed": True}
            row = {"project_id": project_id, "owner": owner, "status": "tuning", "embedded": 0,
                   "created_at": now, "updated_at": now, **fields}
            row["id"] = self._insert("backbone_versions", row)
            return {**row, "resumed": False}

    def update_tuning(self, tuning_id: int, owner: str, **fields) -> None:
        """Record a job's progress or outcome; a StoreError when `owner` no longer runs it (another
        process resumed it after this one went silent)."""
        fields["updated_at"] = time.time()
        with self.transaction():
            sets = ", ".join(f"{k} = ?" for k in fields)
            if not self.db.execute(f"UPDATE backbone_versions SET {sets} WHERE id = ? AND owner = ?",
                                   [*_values(fields).values(), tuning_id, owner]).rowcount:
                raise StoreError(f"fine-tuning job {tuning_id} is no longer run by {owner}")

    def backbone_versions(self, project_id: int) -> list[dict]:
        return self.query("SELECT * FROM backbone_versions WHERE project_id = ? ORDER BY id", [project_id])

    def backbone_version(self, project_id: int, key: str) -> dict | None:
        rows = self.query("SELECT * FROM backbone_versions WHERE project_id = ? AND key = ?",
                          [project_id, key])
        return rows[0] if rows else None

    def retire_backbone(self, project_id: int, key: str) -> None:
        """Stop training on an adopted fine-tuned backbone (the one adopted before it, or the
        project's own, is used again); its embeddings and weights stay."""
        with self.transaction():
            self.db.execute("UPDATE backbone_versions SET status = 'retired', updated_at = ? "
                            "WHERE project_id = ? AND key = ? AND status = 'adopted'",
                            [time.time(), project_id, key])

    def active_backbone(self, project_id: int) -> dict | None:
        """The newest adopted fine-tuned backbone of the project, or None (its own backbone)."""
        rows = self.query("SELECT * FROM backbone_versions WHERE project_id = ? AND status = 'adopted' "
                          "ORDER BY finished_at DESC, id DESC LIMIT 1", [project_id])
        return rows[0] if rows else None

    def _insert_evaluation(self, project_id: int, model_version_id: int, summary: dict,
                           image_ids: Sequence[int], true_class_ids: Sequence[int],
                           probabilities: np.ndarray) -> int:
        row = {"project_id": project_id, "model_version_id": model_version_id,
               "created_at": time.time(),
               **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in summary.items()
                  if k != "id"}}
        probabilities = np.asarray(probabilities, dtype=np.float32)
        eid = self._insert("evaluations", row)
        self._insert_all("holdout_predictions", (
            {"evaluation_id": eid, "image_id": int(i), "class_id": int(c), "probs": p.tobytes()}
            for i, c, p in zip(image_ids, true_class_ids, probabilities)))
        return eid

    def add_evaluation(self, project_id: int, model_version_id: int, summary: dict,
                       image_ids: Sequence[int], true_class_ids: Sequence[int],
                       probabilities: np.ndarray) -> int:
        """Store an evaluation and, per hold-out image, its label and predicted probabilities."""
        with self.transaction():
            return self._insert_evaluation(project_id, model_version_id, summary, image_ids,
                                           true_class_ids, probabilities)

    def evaluations(self, project_id: int) -> list[dict]:
        rows = list(self.db.query(
            "SELECT e.*, m.version, coalesce(m.n_auto, 0) AS n_auto FROM evaluations e "
            "JOIN model_versions m ON m.id = e.model_version_id "
            "WHERE e.project_id = ? ORDER BY m.version, e.id", [project_id]))
        for row in rows:
            for key in ("per_class", "rules"):
                row[key] = json.loads(row[key]) if row[key] else None
        return rows

    def newest_evaluation_id(self, project_id: int) -> int | None:
        """The id of the project's newest evaluation (a cheap poll: has a retrain been scored?)."""
        return self._one("SELECT max(id) FROM evaluations WHERE project_id = ?", [project_id])

    def evaluations_stamp(self, project_id: int) -> tuple:
        """(newest evaluation id, latest re-scoring time): a cheap poll that changes when a
        retrain is scored or a changed hold-out label re-scored the stored evaluations."""
        row = self.db.execute("SELECT max(id), max(rescored_at) FROM evaluations WHERE project_id = ?",
                              [project_id]).fetchone()
        return tuple(row) if row else (None, None)

    def holdout_predictions(self, evaluation_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image ids, true class ids, probabilities (n, k)) stored with an evaluation."""
        rows = self.db.execute("SELECT image_id, class_id, probs FROM holdout_predictions "
                               "WHERE evaluation_id = ? AND class_id IS NOT NULL ORDER BY image_id",
                               [evaluation_id]).fetchall()
        if not rows:
            return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 0), np.float32)
        ids, classes, probs = zip(*rows)
        return (np.array(ids), np.array(classes),
                np.stack([np.frombuffer(p, dtype=np.float32) for p in probs]))

    # -- suspected label errors and their review ----------------------------------------------

    def replace_suspects(self, project_id: int, rows: Sequence[dict], model_version: int) -> None:
        """Set the project's judged labels (see the `suspects` table) as of `model_version`."""
        now = time.time()
        with self.transaction():
            self.db.execute("DELETE FROM suspects WHERE project_id = ?", [project_id])
            self._insert_all("suspects", ({**r, "project_id": project_id, "created_at": now,
                                           "model_version": model_version} for r in rows))

    def suspects_version(self, project_id: int) -> int | None:
        """The model version the stored suspects were judged after (None: never judged)."""
        return self._one("SELECT max(model_version) FROM suspects WHERE project_id = ?", [project_id])

    # A suspect is open while its label is still the one judged and nobody reviewed that label.
    _JUDGED_IN_FORCE = ("s.event_id = (SELECT max(e.id) FROM label_events e WHERE "
                        "e.project_id = s.project_id AND e.image_id = s.image_id)")
    # A label a review set (or a lead's settling of a conflict) is settled: judged, not queued.
    _OPEN_SUSPECT = (_JUDGED_IN_FORCE + " AND s.source != 'review' AND NOT EXISTS (SELECT 1 FROM "
                     "reviews r WHERE r.project_id = s.project_id AND r.event_id = s.event_id)")

    def suspects(self, project_id: int, reviewer: str | None = None, issues_only: bool = True,
                 open_only: bool = True, limit: int | None = None) -> list[dict]:
        """Judged labels in review order: hold-out labels people gave first (every curve point is
        scored against them), then the rest of people's (and auto-accept's) labels, then labels
        that came with a labeled folder (annotator "folder": the user's own ground truth, judged
        and shown, but not what people got wrong); within each, the least likely under the model
        (`score`, the probability of the label given) first. With the image's path and who it
        is assigned to for review. `reviewer`: only those assigned to them. `issues_only`: only
        those confident learning flags."""
        where, args = self._suspects_where(project_id, reviewer, issues_only, open_only)
        sql = ("SELECT s.*, i.path, a.reviewer AS assigned_to " + where +
               " ORDER BY CASE WHEN s.annotator = 'folder' THEN 2 + (CASE WHEN s.split = 'holdout' "
               "THEN 0 ELSE 1 END) WHEN s.split = 'holdout' THEN 0 ELSE 1 END, s.score, s.image_id")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.query(sql, args)

    def _suspects_where(self, project_id: int, reviewer: str | None, issues_only: bool,
                        open_only: bool) -> tuple[str, list]:
        """The FROM and WHERE of the judged labels asked for (see `suspects`), and its arguments."""
        sql = ("FROM suspects s JOIN images i ON i.id = s.image_id LEFT JOIN review_assignments a "
               "ON a.project_id = s.project_id AND a.image_id = s.image_id AND a.event_id = s.event_id "
               "WHERE s.project_id = ?")
        args: list = [project_id]
        if open_only:
            sql += " AND " + self._OPEN_SUSPECT
        if issues_only:
            sql += " AND s.issue = 1"
        if reviewer:
            sql += " AND a.reviewer = ?"
            args.append(reviewer)
        return sql, args

    def _role(self, name: str) -> str | None:
        return self._one("SELECT role FROM people WHERE name = ? AND revoked_at IS NULL", [name])

    def _may_review(self, project_id: int, image_id: int, reviewer: str, label: dict) -> None:
        """Nobody reviews their own label but a lead; a lead reviews any suspect, an annotator only
        one a lead sent them (that label), a revoked person none. A name of no person (a replay's
        simulated reviewer) is the system's."""
        person = self.query("SELECT role, revoked_at FROM people WHERE name = ?", [reviewer])
        role = person[0]["role"] if person and person[0]["revoked_at"] is None else None
        if person and role is None:
            raise StoreError(f"{reviewer}'s token was revoked: nothing was stored")
        if label["annotator"] == reviewer and role != "lead":
            raise StoreError(f"{reviewer} gave this label; a second person must review it")
        if person and role != "lead" and not self.query(
                "SELECT 1 FROM review_assignments WHERE project_id = ? AND image_id = ? AND "
                "reviewer = ? AND event_id = ?", [project_id, int(image_id), reviewer, label["id"]]):
            raise StoreError(f"image {image_id} was not sent to {reviewer} to review; a lead "
                             "sends suspects to a second person")

    def _reviewable(self, project_id: int, image_id: int, event_id: int | None) -> dict:
        """The label event in force on `image_id`, checked: it is a label, and the one the
        reviewer saw (`event_id`)."""
        row = self._in_force(project_id, int(image_id))
        if row is None or row["class_id"] is None:
            raise StoreError(f"image {image_id} has no label to review")
        if event_id is not None and row["id"] != int(event_id):
            raise StoreError(f"the label of image {image_id} changed since it was shown to you "
                             f"(by {row['annotator']}); nothing was stored, look at it again")
        return row

    def review_label(self, project_id: int, image_id: int, reviewer: str, decision: str,
                     class_id: int | None = None, event_id: int | None = None) -> dict:
        """Record a review of the label in force on `image_id` (the event `event_id` the reviewer
        saw): "kept"; "changed" to `class_id`, a new label event with source "review" (never an
        update in place); or "flagged", the label withdrawn by a review event without a class and
        the image flagged for the lead. Returns the stored review row."""
        if decision not in REVIEW_DECISIONS:
            raise StoreError(f"a review decision is one of {', '.join(REVIEW_DECISIONS)}, got '{decision}'")
        with self.transaction():
            label = self._reviewable(project_id, image_id, event_id)
            self._may_review(project_id, image_id, reviewer, label)
            split = self._one("SELECT split FROM images WHERE id = ?", [int(image_id)])
            new_event = None
            if decision == "changed":
                if class_id not in {c["id"] for c in self.classes(project_id)}:
                    raise StoreError(f"class id {class_id} does not exist in this project")
                if class_id == label["class_id"]:
                    decision = "kept"     # "changed" to the label it has: the label is confirmed
                else:
                    new_event = self._insert("label_events", {
                        "project_id": project_id, "image_id": int(image_id), "class_id": class_id,
                        "annotator": reviewer, "source": "review", "created_at": time.time(),
                        "origin": "suspect"})
            elif decision == "flagged":
                class_id = None
                new_event = self._insert("label_events", {
                    "project_id": project_id, "image_id": int(image_id), "class_id": None,
                    "annotator": reviewer, "source": "review", "created_at": time.time(),
                    "origin": "suspect-flag"})
                self._replace("flags", {"project_id": project_id, "image_id": int(image_id),
                                        "annotator": reviewer, "created_at": time.time(),
                                        "status": "open", "resolved_by": None, "resolved_at": None})
            if decision == "kept":
                class_id = label["class_id"]
            review = {"project_id": project_id, "image_id": int(image_id), "event_id": label["id"],
                      "split": split, "reviewer": reviewer, "annotator": label["annotator"],
                      "decision": decision, "old_class_id": label["class_id"], "class_id": class_id,
                      "new_event_id": new_event, "created_at": time.time()}
            review["id"] = self._insert("reviews", review)
            self.db.execute("DELETE FROM review_assignments WHERE project_id = ? AND image_id = ?",
                            [project_id, int(image_id)])
            return review

    def open_suspects_count(self, project_id: int, reviewer: str | None = None) -> int:
        """How many open suspects confident learning flags (for `reviewer`: sent to them)."""
        where, args = self._suspects_where(project_id, reviewer, issues_only=True, open_only=True)
        return self._one("SELECT count(*) " + where, args) or 0

    def reviews(self, project_id: int, split: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM reviews WHERE project_id = ?", [project_id]
        if split:
            sql += " AND split = ?"
            args.append(split)
        return self.query(sql + " ORDER BY id", args)

    def assign_review(self, project_id: int, image_id: int, reviewer: str, by: str,
                      event_id: int | None = None) -> None:
        """Send a suspected label (the event `event_id` the lead saw) to `reviewer` (never the
        person who gave it)."""
        with self.transaction():
            label = self._reviewable(project_id, image_id, event_id)
            if label["annotator"] == reviewer:
                raise StoreError(f"{reviewer} gave this label; send it to a second person")
            if self._role(reviewer) is None:
                raise StoreError(f"'{reviewer}' is not a person with a valid token here")
            self._replace("review_assignments", {"project_id": project_id, "image_id": int(image_id),
                                                 "event_id": label["id"], "reviewer": reviewer,
                                                 "assigned_by": by, "created_at": time.time()})

    def suspicion_by_annotator(self, project_id: int) -> list[dict]:
        """Per person who gave labels in force: labels judged, suspected (flagged by confident
        learning), and of their labels reviewed, how many were changed or flagged."""
        judged = self.query(
            "SELECT annotator, count(*) AS judged, sum(issue) AS suspected FROM suspects s "
            "WHERE project_id = ? AND " + self._JUDGED_IN_FORCE + " GROUP BY annotator", [project_id])
        reviewed = self.query(
            "SELECT annotator, count(*) AS reviewed, sum(CASE WHEN decision != 'kept' THEN 1 ELSE 0 END) "
            "AS corrected FROM reviews WHERE project_id = ? GROUP BY annotator", [project_id])
        people: dict[str, dict] = {}
        for row in judged:
            people[row["annotator"]] = {"annotator": row["annotator"], "judged": row["judged"],
                                        "suspected": int(row["suspected"] or 0), "reviewed": 0,
                                        "corrected": 0}
        for row in reviewed:
            entry = people.setdefault(row["annotator"], {"annotator": row["annotator"], "judged": 0,
                                                         "suspected": 0})
            entry.update(reviewed=row["reviewed"], corrected=int(row["corrected"] or 0))
        return sorted(people.values(), key=lambda r: r["annotator"])

    # -- re-scoring the stored evaluations when a hold-out label changes ----------------------

    def evaluations_with_image(self, project_id: int, image_id: int) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT p.evaluation_id FROM holdout_predictions p JOIN evaluations e ON "
            "e.id = p.evaluation_id WHERE e.project_id = ? AND p.image_id = ? ORDER BY 1",
            [project_id, int(image_id)]).fetchall()]

    def set_holdout_truth(self, project_id: int, image_id: int, class_id: int | None) -> None:
        """The hold-out label every stored evaluation scores `image_id` against (None: no
        longer part of the hold-out's scoring)."""
        self.db.execute("UPDATE holdout_predictions SET class_id = ? WHERE image_id = ? AND "
                        "evaluation_id IN (SELECT id FROM evaluations WHERE project_id = ?)",
                        [class_id, int(image_id), project_id])

    _SCORES = ("n_holdout", "accuracy", "balanced_accuracy", "per_class", "rules", "ece")

    def update_scores(self, evaluation_id: int, summary: dict) -> None:
        """Replace an evaluation's scores (re-scored from its stored per-image predictions)."""
        values = {k: (json.dumps(summary[k]) if isinstance(summary[k], (dict, list)) else summary[k])
                  for k in self._SCORES}
        self.db.execute("UPDATE evaluations SET " + ", ".join(f"{k} = :{k}" for k in values) +
                        ", rescored_at = :now WHERE id = :id", {**values, "now": time.time(),
                                                                 "id": evaluation_id})

    # -- the log the pages read -----------------------------------------------------------------

    def log(self, project_id: int, kind: str, message: str) -> None:
        with self.transaction():
            self._insert("project_log", {"project_id": project_id, "kind": kind, "message": message,
                                         "created_at": time.time()})

    def log_entries(self, project_id: int, kind: str | None = None, limit: int = 20) -> list[dict]:
        sql, args = "SELECT * FROM project_log WHERE project_id = ?", [project_id]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        return self.query(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])

    # -- backup and restore ---------------------------------------------------------------------

    def backup(self, destination: str | Path) -> Path:
        """A consistent copy of the whole database taken while others keep writing (SQLite's
        online backup API); refuses to overwrite an existing file. SQLite only."""
        self._sqlite_only("backup", "pg_dump --format=custom --file=FILE")
        destination = Path(destination).expanduser()
        if destination.exists():
            raise StoreError(f"'{destination}' exists already; choose a new file for the backup")
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp = destination.with_name(destination.name + ".part")
        target = sqlite3.connect(tmp)
        try:
            self.db.conn.backup(target)
        except sqlite3.Error as exc:
            target.close()
            tmp.unlink(missing_ok=True)
            raise (translate(exc, self.path) or exc) from None
        target.close()
        os.replace(tmp, destination)
        return destination

    def restore(self, source: str | Path) -> None:
        """Bring a backup back into this database, online (other connections see it at once).
        SQLite only."""
        self._sqlite_only("restore", "pg_restore --clean --dbname=URL FILE")
        source = Path(source).expanduser()
        if not source.is_file():
            raise StoreError(f"backup '{source}' does not exist")
        conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"'{source}' is not a Juicer database: {exc}") from None
        if check != "ok" or not {"projects", "label_events"} <= tables:
            conn.close()
            raise StoreError(f"'{source}' is not a sound Juicer database (integrity: {check})")
        try:
            conn.backup(self.db.conn)
        except sqlite3.Error as exc:
            raise (translate(exc, self.path) or exc) from None
        finally:
            conn.close()
        self.db.create_schema()

    def _sqlite_only(self, action: str, command: str) -> None:
        if self.postgres:
            raise StoreError(f"{action} copies a SQLite database file; '{self.path}' is a PostgreSQL "
                             f"database: use PostgreSQL's own tools (`{command}`), which take a "
                             "consistent copy while people work")


class _Transaction:
    def __init__(self, db: _SQLite | _Postgres, path: str):
        self.db = db
        self.path = path
        self.outer = False

    def __enter__(self):
        self.outer = not self.db.in_transaction
        if self.outer:
            try:
                self.db.begin_write()
            except self.db.errors as exc:
                raise (translate(exc, self.path) or exc) from None
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.outer:
            return False
        if exc_type:
            with contextlib.suppress(StoreError, *self.db.errors):
                self.db.execute("ROLLBACK")
            if isinstance(exc, self.db.errors):
                storage = translate(exc, self.path)
                if storage is not None:
                    raise storage from None
            return False
        try:
            self.db.commit_write()
        except self.db.errors as commit_error:
            with contextlib.suppress(StoreError, *self.db.errors):
                self.db.execute("ROLLBACK")
            raise (translate(commit_error, self.path) or commit_error) from None
        return False


# -- the two databases ----------------------------------------------------------------------------
# The store's SQL is SQLite's, with `?` (or `:name`) placeholders; ON CONFLICT and RETURNING run on
# both. What differs lives in these two connection classes: column types and the schema's DDL,
# placeholders, how transactions begin, and error codes (see `translate`).

def is_postgres(location: str | Path) -> bool:
    """Whether `location` names a PostgreSQL database (a postgresql:// URL) rather than a file."""
    return str(location).startswith(("postgresql://", "postgres://"))


def _without_password(url: str) -> str:
    return re.sub(r"^(\w+://[^/:@]*):[^/@]*@", r"\1@", url)


def _values(row: dict) -> dict:
    """A row as both drivers take it: JSON for dicts and lists (as sqlite-utils stored them),
    Python numbers for numpy's."""
    return {k: json.dumps(v) if isinstance(v, (dict, list, tuple)) else
            v.item() if isinstance(v, np.generic) else v for k, v in row.items()}


def _primary_key(table: str) -> tuple[str, ...]:
    pk = SCHEMA[table][1]["pk"]
    return (pk,) if isinstance(pk, str) else tuple(pk)


@functools.lru_cache(maxsize=64)
def _replace_sql(table: str, columns: tuple[str, ...], values: str | None = None) -> str:
    """INSERT OR REPLACE as both databases spell it: on a clash of the primary key every other
    column is set anew, those not given to NULL (as REPLACE leaves them). `values`: SQL for the
    VALUES list, when some are subqueries."""
    key = _primary_key(table)
    given = set(columns)
    sets = ", ".join(f"{c} = excluded.{c}" if c in given else f"{c} = NULL"
                     for c in SCHEMA[table][0] if c not in key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
            f"({values or ', '.join('?' * len(columns))}) ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")


class _SQLite(sqlite_utils.Database):
    """A SQLite connection (sqlite-utils' Database, which `store.db` has always been)."""

    errors = (sqlite3.Error,)
    arrival = "rowid"       # the order rows were written, to break ties of time

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def begin_write(self) -> None:
        # IMMEDIATE: take the write lock now, so writers take turns (see _Postgres.begin_write).
        self.conn.execute("BEGIN IMMEDIATE")

    def begin_read(self) -> None:
        self.conn.execute("BEGIN DEFERRED")    # the snapshot is taken at the first read

    def commit_write(self) -> None:
        self.conn.execute("COMMIT")

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        for start in range(0, len(rows), 1000):
            self.conn.executemany(sql, rows[start:start + 1000])

    def create_schema(self) -> None:
        for name, (columns, options) in SCHEMA.items():
            self[name].create(columns, if_not_exists=True, **options)
            present = self[name].columns_dict
            for column, kind in columns.items():   # a database from an older version gains columns
                if column not in present:
                    self[name].add_column(column, kind)
        for table, columns, unique in INDEXES:
            self[table].create_index(columns, unique=unique, if_not_exists=True)


_POSTGRES_TYPES = {int: "BIGINT", str: "TEXT", float: "DOUBLE PRECISION", bytes: "BYTEA"}
# The key of the advisory lock every write transaction holds (any constant: "Juicer" in ASCII).
_WRITE_LOCK = 0x4A7569636572


@functools.lru_cache(maxsize=4096)
def _postgres_sql(sql: str, named: bool) -> str:
    """The store's SQL with psycopg's placeholders (%s, %(name)s; a literal % doubled)."""
    sql = sql.replace("%", "%%")
    if named:
        return re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"%(\1)s", sql)
    return sql.replace("?", "%s")


def _postgres_table(name: str) -> str:
    """CREATE TABLE for PostgreSQL from SCHEMA: an integer `id` key is an identity column (SQLite's
    INTEGER PRIMARY KEY), integers are 64-bit as SQLite's are, bytes are BYTEA."""
    columns, options = SCHEMA[name]
    key = _primary_key(name)
    parts = []
    for column, kind in columns.items():
        part = f"{column} {_POSTGRES_TYPES[kind]}"
        if key == (column,) and kind is int:
            part += " GENERATED BY DEFAULT AS IDENTITY"
        if column in options.get("not_null", ()):
            part += " NOT NULL"
        parts.append(part)
    parts.append(f"PRIMARY KEY ({', '.join(key)})")
    parts += [f"FOREIGN KEY ({c}) REFERENCES {t} ({r})" for c, t, r in options.get("foreign_keys", ())]
    return f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(parts)})"


class _Postgres:
    """A PostgreSQL connection (psycopg 3, autocommit: transactions are begun here) that takes the
    store's SQL and raises storage failures as StorageError."""

    arrival = "image_id"    # no rowid: a person's two answers never share a time, so ties are moot

    def __init__(self, url: str, path: str):
        import psycopg
        from psycopg.pq import TransactionStatus

        self.errors = (psycopg.Error,)
        self._idle = TransactionStatus.IDLE
        self._failed = TransactionStatus.INERROR
        self.path = path
        try:
            self.conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise (translate(exc, path) or exc) from None
        # A writer waits for the write lock at most as long as SQLite's busy timeout.
        self.execute("SET lock_timeout = '30s'")

    def execute(self, sql: str, parameters: Sequence | dict | None = None):
        if parameters:
            sql = _postgres_sql(sql, isinstance(parameters, dict))
        try:
            return self.conn.execute(sql, parameters or None)
        except self.errors as exc:
            raise (translate(exc, self.path) or exc) from None

    def query(self, sql: str, params: Sequence | dict | None = None) -> list[dict]:
        cursor = self.execute(sql, params)
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def executemany(self, sql: str, rows: Sequence[Sequence]) -> None:
        try:
            with self.conn.cursor() as cursor:
                cursor.executemany(_postgres_sql(sql, False), rows)
        except self.errors as exc:
            raise (translate(exc, self.path) or exc) from None

    def table_names(self) -> list[str]:
        return [r[0] for r in self.execute("SELECT table_name FROM information_schema.tables "
                                           "WHERE table_schema = current_schema()").fetchall()]

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != self._idle

    def begin_write(self) -> None:
        # Writers take turns on the whole database, as under SQLite's BEGIN IMMEDIATE: every write
        # transaction first takes one transaction-scoped advisory lock. Row locks (SELECT ... FOR
        # UPDATE SKIP LOCKED) would not keep the semantics: a lease or an answer checks rows that
        # do not exist yet (no lease, no draft, no newer event) before it writes, and nothing locks
        # an absent row; and the event log's ids are what trainers count up to (`last_event_id`),
        # so they must become visible in id order, which one writer at a time guarantees (an
        # identity column hands out ids at insert, not at commit). Each statement (READ
        # COMMITTED) then sees every earlier writer's commits, as a SQLite writer does.
        self.execute("BEGIN")
        try:
            self.execute(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
        except BaseException:
            with contextlib.suppress(StoreError, *self.errors):
                self.execute("ROLLBACK")
            raise

    def begin_read(self) -> None:
        # SQLite's read transaction: one snapshot, taken at the first read.
        self.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def commit_write(self) -> None:
        if self.conn.info.transaction_status == self._failed:
            # PostgreSQL turns COMMIT of a failed transaction into a silent ROLLBACK: say so.
            self.execute("ROLLBACK")
            raise StoreError("a statement of this transaction failed, so nothing of it was stored")
        self.execute("COMMIT")

    def create_schema(self) -> None:
        """The tables, columns and indexes of SCHEMA that are missing (usually none: one read),
        created under the write lock (two processes creating one table at once would clash)."""
        # pg_catalog, not information_schema: the same answer in a fraction of the time.
        present = {(t, c) for t, c in self.execute(
            "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' "
            "AND a.attnum > 0 AND NOT a.attisdropped").fetchall()}
        indexes = {r[0] for r in self.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
            "AND relkind = 'i'").fetchall()}
        wanted = {(t, c) for t, (columns, _) in SCHEMA.items() for c in columns}

        def index_name(table, columns):
            return f"idx_{table}_{'_'.join(columns)}"

        if wanted <= present and all(index_name(t, c) in indexes for t, c, _ in INDEXES):
            return
        tables = {t for t, _ in present}
        with _Transaction(self, self.path):
            for name, (columns, _) in SCHEMA.items():
                if name not in tables:
                    self.execute(_postgres_table(name))
                    continue
                for column, kind in columns.items():   # a database from an older version
                    if (name, column) not in present:
                        self.execute(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {column} "
                                     f"{_POSTGRES_TYPES[kind]}")
            for table, columns, unique in INDEXES:
                if index_name(table, columns) not in indexes:
                    self.execute(f"CREATE {'UNIQUE ' if unique else ''}INDEX IF NOT EXISTS "
                                 f"{index_name(table, columns)} ON {table} ({', '.join(columns)})")
