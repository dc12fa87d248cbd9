"""The project store: one SQLite database (WAL mode) through sqlite-utils, and the schema in one place.

Labels are an append-only event log; an image's current label is its latest event (an event with
no class retracts the label). Nothing here is ever updated in place except an image's split.

>>> store = Store(":memory:")
>>> pid = store.create_project("demo", "/tmp", "{}", ["cat", "dog"])
>>> [c["name"] for c in store.classes(pid)]
['cat', 'dog']
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import sqlite_utils

LABEL_SOURCES = ("seed", "human", "simulated", "imported", "auto")
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
    "label_events": ({"id": int, "project_id": int, "image_id": int, "class_id": int,
                      "annotator": str, "source": str, "created_at": float, "origin": str},
                     {"pk": "id", "foreign_keys": [("project_id", "projects", "id"),
                                                   ("image_id", "images", "id"),
                                                   ("class_id", "classes", "id")]}),
    "model_versions": ({"id": int, "project_id": int, "version": int, "created_at": float,
                        "n_labels": int, "last_event_id": int, "class_counts": str,
                        "train_seconds": float, "weights_path": str, "backbone": str, "n_auto": int},
                       {"pk": "id", "foreign_keys": [("project_id", "projects", "id")]}),
    "evaluations": ({"id": int, "project_id": int, "model_version_id": int, "n_labels": int,
                     "n_holdout": int, "accuracy": float, "balanced_accuracy": float,
                     "per_class": str, "rules": str, "ece": float, "created_at": float},
                    {"pk": "id", "foreign_keys": [("project_id", "projects", "id"),
                                                  ("model_version_id", "model_versions", "id")]}),
    "holdout_predictions": ({"evaluation_id": int, "image_id": int, "class_id": int,
                             "probs": bytes},
                            {"pk": ("evaluation_id", "image_id"),
                             "foreign_keys": [("evaluation_id", "evaluations", "id"),
                                              ("image_id", "images", "id")]}),
    # Who is looking at which image now: a lease expires, so a closed tab frees its images.
    "leases": ({"project_id": int, "image_id": int, "annotator": str, "leased_at": float,
                "expires_at": float, "origin": str},
               {"pk": ("project_id", "image_id"),
                "foreign_keys": [("project_id", "projects", "id"), ("image_id", "images", "id")]}),
    # Answers given but not yet submitted: kept in the database so a refresh loses none.
    "drafts": ({"project_id": int, "annotator": str, "image_id": int, "class_id": int,
                "skipped": int, "created_at": float, "origin": str},
               {"pk": ("project_id", "annotator", "image_id"),
                "foreign_keys": [("project_id", "projects", "id"), ("image_id", "images", "id"),
                                 ("class_id", "classes", "id")]}),
    # Images auto-accept would have labeled, sent to people instead to measure its precision.
    "audits": ({"project_id": int, "image_id": int, "predicted_class_id": int, "model_version": int,
                "plan": str, "created_at": float},
               {"pk": ("project_id", "image_id"),
                "foreign_keys": [("project_id", "projects", "id"), ("image_id", "images", "id")]}),
    # Folders the browser may import from (a lead adds them from the command line).
    "import_roots": ({"path": str, "added_at": float}, {"pk": "path"}),
}
INDEXES = [
    ("classes", ["project_id", "name"], True),
    ("images", ["project_id", "path"], True),
    ("images", ["project_id", "hash"], False),
    ("label_events", ["project_id", "image_id"], False),
    ("model_versions", ["project_id", "version"], True),
    ("evaluations", ["project_id", "model_version_id"], False),
]


class StoreError(ValueError):
    """A request the store refuses; the message names the bad thing."""


class Store:
    """Thread-safe access to one database file: each thread gets its own connection."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        if self.path == ":memory:":
            # One shared in-memory connection (tests and doctests only).
            self._shared = sqlite_utils.Database(sqlite3.connect(":memory:", check_same_thread=False))
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._shared = None
        self._create_schema()

    @property
    def db(self) -> sqlite_utils.Database:
        if self._shared is not None:
            return self._shared
        if getattr(self._local, "db", None) is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db = sqlite_utils.Database(conn)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return self._local.db

    def _create_schema(self) -> None:
        db = self.db
        for name, (columns, options) in SCHEMA.items():
            db[name].create(columns, if_not_exists=True, **options)
            present = db[name].columns_dict
            for column, kind in columns.items():   # a database from an older version gains columns
                if column not in present:
                    db[name].add_column(column, kind)
        for table, columns, unique in INDEXES:
            db[table].create_index(columns, unique=unique, if_not_exists=True)

    def transaction(self):
        """`with store.transaction():` all or nothing (an exception rolls everything back)."""
        return _Transaction(self.db.conn)

    # -- projects and classes -------------------------------------------------------------------

    def create_project(self, name: str, root: str, settings_json: str,
                       class_names: Sequence[str]) -> int:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise StoreError(f"project name '{name}' must be letters, digits, '-' or '_'")
        if self.db["projects"].count_where("name = ?", [name]):
            raise StoreError(f"project '{name}' already exists; open it or choose another name")
        names = list(class_names)
        if len(names) < 2 or len(set(names)) != len(names):
            raise StoreError(f"a project needs at least 2 distinct classes, got {names}")
        with self.transaction():
            pid = self.db["projects"].insert({"name": name, "root": root, "settings": settings_json,
                                              "created_at": time.time()}).last_pk
            self.db["classes"].insert_all({"project_id": pid, "name": c, "position": i}
                                          for i, c in enumerate(names))
        return pid

    def project(self, name_or_id: str | int) -> dict:
        column = "id" if isinstance(name_or_id, int) else "name"
        rows = list(self.db["projects"].rows_where(f"{column} = ?", [name_or_id]))
        if not rows:
            known = ", ".join(r["name"] for r in self.db["projects"].rows) or "none yet"
            raise StoreError(f"no project '{name_or_id}' (known projects: {known})")
        return rows[0]

    def projects(self) -> list[dict]:
        return list(self.db["projects"].rows_where(order_by="id"))

    def classes(self, project_id: int) -> list[dict]:
        return list(self.db["classes"].rows_where("project_id = ?", [project_id], order_by="position"))

    def class_id(self, project_id: int, name: str) -> int:
        for row in self.classes(project_id):
            if row["name"] == name:
                return row["id"]
        known = ", ".join(c["name"] for c in self.classes(project_id))
        raise StoreError(f"class '{name}' does not exist in this project (classes: {known})")

    # -- import roots: the folders a browser may import from ------------------------------------

    def import_roots(self) -> list[str]:
        return [r["path"] for r in self.db["import_roots"].rows_where(order_by="path")]

    def add_import_root(self, path: str) -> None:
        with self.transaction():
            self.db["import_roots"].insert({"path": str(path), "added_at": time.time()}, replace=True)

    def remove_import_root(self, path: str) -> bool:
        with self.transaction():
            found = self.db["import_roots"].count_where("path = ?", [str(path)])
            self.db.execute("DELETE FROM import_roots WHERE path = ?", [str(path)])
        return bool(found)

    # -- images ---------------------------------------------------------------------------------

    def add_images(self, project_id: int, rows: Iterable[dict]) -> None:
        self.db["images"].insert_all(({"project_id": project_id, "status": "ok", **r} for r in rows),
                                     batch_size=1000)

    def images(self, project_id: int, split: str | None = None, status: str | None = "ok") -> list[dict]:
        where, args = ["project_id = ?"], [project_id]
        if split:
            where.append("split = ?")
            args.append(split)
        if status:
            where.append("status = ?")
            args.append(status)
        return list(self.db["images"].rows_where(" AND ".join(where), args, order_by="id"))

    def skipped_images(self, project_id: int) -> list[dict]:
        return list(self.db["images"].rows_where("project_id = ? AND status = 'skipped'",
                                                 [project_id], order_by="id"))

    def skip_image(self, image_id: int, reason: str) -> None:
        self.db["images"].update(image_id, {"status": "skipped", "reason": reason})

    def set_split(self, image_ids: Sequence[int], split: str) -> None:
        if split not in SPLITS:
            raise StoreError(f"split must be one of {SPLITS}, got '{split}'")
        with self.transaction():
            for start in range(0, len(image_ids), 500):
                chunk = list(image_ids[start:start + 500])
                self.db.execute(f"UPDATE images SET split = ? WHERE id IN ({','.join('?' * len(chunk))})",
                                [split, *chunk])

    # -- labels ---------------------------------------------------------------------------------

    def add_labels(self, project_id: int, labels: Sequence[tuple[int, str | int | None]],
                   annotator: str, source: str, origins: Sequence[str | None] | None = None) -> list[int]:
        """Append one event per (image id, class name or id or None to retract), all in one
        transaction: either every label of the batch is stored or none is. `origins` says why
        each image was asked ("strategy", "control", "holdout", "grid"), where known."""
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
        for (image_id, cls), origin in zip(labels, origins):
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
                           "origin": origin})
        image_ids = sorted({e["image_id"] for e in events})
        if image_ids:
            found = {r["id"] for r in self.db.query(
                f"SELECT id FROM images WHERE project_id = ? AND status = 'ok' AND id IN "
                f"({','.join('?' * len(image_ids))})", [project_id, *image_ids])}
            missing = [i for i in image_ids if i not in found]
            if missing:
                raise StoreError(f"image id(s) {missing[:10]} are not usable images of this project")
        with self.transaction():
            return [self.db["label_events"].insert(e).last_pk for e in events]

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

    def update_settings(self, project_id: int, settings_json: str) -> None:
        self.db["projects"].update(project_id, {"settings": settings_json})

    def last_event_id(self, project_id: int) -> int:
        row = self.db.execute("SELECT max(id) FROM label_events WHERE project_id = ?",
                              [project_id]).fetchone()
        return row[0] or 0

    # -- leases and drafts: several annotators at once ------------------------------------------

    def lease(self, project_id: int, image_ids: Sequence[int], annotator: str,
              seconds: float = 900, origins: Sequence[str] | None = None) -> list[int]:
        """Lease the images to `annotator` for `seconds`, skipping any another annotator holds
        (atomically: two annotators asking at once never both get one). Returns those granted."""
        now = time.time()
        granted = []
        origins = list(origins) if origins is not None else [None] * len(image_ids)
        with self.transaction():
            for image_id, origin in zip(image_ids, origins):
                holder = self.db.execute(
                    "SELECT annotator FROM leases WHERE project_id = ? AND image_id = ? AND expires_at > ?",
                    [project_id, int(image_id), now]).fetchone()
                if holder is not None and holder[0] != annotator:
                    continue
                self.db.execute("INSERT OR REPLACE INTO leases (project_id, image_id, annotator, leased_at, "
                                "expires_at, origin) VALUES (?, ?, ?, ?, ?, coalesce(?, (SELECT origin FROM "
                                "leases WHERE project_id = ? AND image_id = ?)))",
                                [project_id, int(image_id), annotator, now, now + seconds, origin,
                                 project_id, int(image_id)])
                granted.append(int(image_id))
        return granted

    def leases(self, project_id: int, annotator: str | None = None) -> list[dict]:
        """Unexpired leases (of one annotator, or all), oldest first."""
        sql, args = "SELECT * FROM leases WHERE project_id = ? AND expires_at > ?", [project_id, time.time()]
        if annotator is not None:
            sql += " AND annotator = ?"
            args.append(annotator)
        return list(self.db.query(sql + " ORDER BY leased_at, image_id", args))

    def release(self, project_id: int, image_ids: Sequence[int], annotator: str) -> None:
        with self.transaction():
            for image_id in image_ids:
                self.db.execute("DELETE FROM leases WHERE project_id = ? AND image_id = ? AND annotator = ?",
                                [project_id, int(image_id), annotator])

    def save_draft(self, project_id: int, annotator: str, image_id: int, class_id: int | None) -> None:
        """Record an answer (a class id, or None for skip) not yet submitted; renews the lease."""
        now = time.time()
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO drafts (project_id, annotator, image_id, class_id, "
                            "skipped, created_at, origin) VALUES (?, ?, ?, ?, ?, ?, (SELECT origin FROM "
                            "leases WHERE project_id = ? AND image_id = ?))",
                            [project_id, annotator, int(image_id), class_id, int(class_id is None), now,
                             project_id, int(image_id)])
            self.db.execute("UPDATE leases SET expires_at = max(expires_at, ?) WHERE project_id = ? "
                            "AND annotator = ?", [now + 900, project_id, annotator])

    def drafts(self, project_id: int, annotator: str) -> list[dict]:
        return list(self.db.query("SELECT * FROM drafts WHERE project_id = ? AND annotator = ? "
                                  "ORDER BY created_at, rowid", [project_id, annotator]))

    def delete_draft(self, project_id: int, annotator: str, image_id: int) -> None:
        self.db.execute("DELETE FROM drafts WHERE project_id = ? AND annotator = ? AND image_id = ?",
                        [project_id, annotator, int(image_id)])

    def submit_drafts(self, project_id: int, annotator: str, source: str = "human") -> list[int]:
        """Turn the annotator's drafts into label events, all in one transaction, and free their
        images. Skipped images are freed unlabeled. Returns the labeled image ids."""
        with self.transaction():
            drafts = self.drafts(project_id, annotator)
            kept = [d for d in drafts if not d["skipped"]]
            labels = [(d["image_id"], d["class_id"]) for d in kept]
            if labels:
                self.add_labels(project_id, labels, annotator, source, origins=[d["origin"] for d in kept])
            self.db.execute("DELETE FROM drafts WHERE project_id = ? AND annotator = ?",
                            [project_id, annotator])
            self.release(project_id, [d["image_id"] for d in drafts], annotator)
        return [i for i, _ in labels]

    def label_events(self, project_id: int) -> list[dict]:
        return list(self.db["label_events"].rows_where("project_id = ?", [project_id], order_by="id"))

    # -- model versions and evaluations ---------------------------------------------------------

    def add_model_version(self, project_id: int, **fields) -> dict:
        with self.transaction():
            version = self.db.execute("SELECT coalesce(max(version), 0) + 1 FROM model_versions "
                                      "WHERE project_id = ?", [project_id]).fetchone()[0]
            row = {"project_id": project_id, "version": version, "created_at": time.time(), **fields}
            if isinstance(row.get("class_counts"), dict):
                row["class_counts"] = json.dumps(row["class_counts"])
            row["id"] = self.db["model_versions"].insert(row).last_pk
        return row

    def model_versions(self, project_id: int) -> list[dict]:
        return list(self.db["model_versions"].rows_where("project_id = ?", [project_id],
                                                         order_by="version"))

    def latest_model_version(self, project_id: int) -> dict | None:
        rows = list(self.db["model_versions"].rows_where("project_id = ?", [project_id],
                                                         order_by="version desc", limit=1))
        return rows[0] if rows else None

    def add_evaluation(self, project_id: int, model_version_id: int, summary: dict,
                       image_ids: Sequence[int], true_class_ids: Sequence[int],
                       probabilities: np.ndarray) -> int:
        """Store an evaluation and, per hold-out image, its label and predicted probabilities."""
        row = {"project_id": project_id, "model_version_id": model_version_id,
               "created_at": time.time(),
               **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in summary.items()}}
        probabilities = np.asarray(probabilities, dtype=np.float32)
        with self.transaction():
            eid = self.db["evaluations"].insert(row).last_pk
            self.db["holdout_predictions"].insert_all(
                ({"evaluation_id": eid, "image_id": int(i), "class_id": int(c), "probs": p.tobytes()}
                 for i, c, p in zip(image_ids, true_class_ids, probabilities)), batch_size=1000)
        return eid

    def evaluations(self, project_id: int) -> list[dict]:
        rows = list(self.db.query(
            "SELECT e.*, m.version, coalesce(m.n_auto, 0) AS n_auto FROM evaluations e "
            "JOIN model_versions m ON m.id = e.model_version_id "
            "WHERE e.project_id = ? ORDER BY e.id", [project_id]))
        for row in rows:
            for key in ("per_class", "rules"):
                row[key] = json.loads(row[key]) if row[key] else None
        return rows

    def holdout_predictions(self, evaluation_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image ids, true class ids, probabilities (n, k)) stored with an evaluation."""
        rows = self.db.execute("SELECT image_id, class_id, probs FROM holdout_predictions "
                               "WHERE evaluation_id = ? ORDER BY image_id", [evaluation_id]).fetchall()
        if not rows:
            return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 0), np.float32)
        ids, classes, probs = zip(*rows)
        return (np.array(ids), np.array(classes),
                np.stack([np.frombuffer(p, dtype=np.float32) for p in probs]))


class _Transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.outer = False

    def __enter__(self):
        self.outer = not self.conn.in_transaction
        if self.outer:
            self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.outer:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
