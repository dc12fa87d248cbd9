# ruff: noqa: F811  (the fixtures imported from tests/postgres.py are the tests' parameters)
import sqlite3
import threading
import time

import numpy as np
import pytest

from loop.store import StorageError, Store, StoreError
from tests.postgres import backend, database, postgres_server, sqlite_only  # noqa: F401


@pytest.fixture
def store(database):
    return Store(database)


@pytest.fixture
def project(store):
    pid = store.create_project("p", "/data", "{}", ["cat", "dog", "cow"])
    store.add_images(pid, [{"path": f"{i}.png", "hash": f"h{i}", "split": "pool"} for i in range(6)])
    return pid


def image_ids(store, pid):
    return [i["id"] for i in store.images(pid)]


def test_wal_mode_and_schema(store, backend):
    if backend == "sqlite":
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"projects", "classes", "images", "label_events", "model_versions", "evaluations",
            "holdout_predictions"} <= set(store.db.table_names())


def test_labels_are_an_append_only_log(store, project):
    a, b = image_ids(store, project)[:2]
    store.add_labels(project, [(a, "cat"), (b, "dog")], "ana", "human")
    store.add_labels(project, [(a, "cow")], "ben", "human")          # a correction
    cow, dog = store.class_id(project, "cow"), store.class_id(project, "dog")
    assert store.current_labels(project) == {a: cow, b: dog}
    events = store.label_events(project)
    assert [(e["image_id"], e["annotator"]) for e in events] == [(a, "ana"), (b, "ana"), (a, "ben")]
    store.add_labels(project, [(b, None)], "ana", "human")           # retraction
    assert store.current_labels(project) == {a: cow}
    assert len(store.label_events(project)) == 4                     # nothing was overwritten
    first_two = events[1]["id"]
    assert store.current_labels(project, up_to_event=first_two) == {a: store.class_id(project, "cat"), b: dog}


def test_a_bad_label_rejects_the_whole_batch(store, project):
    a, b = image_ids(store, project)[:2]
    with pytest.raises(StoreError, match="class 'horse' does not exist"):
        store.add_labels(project, [(a, "cat"), (b, "horse")], "ana", "human")
    with pytest.raises(StoreError, match="not usable images"):
        store.add_labels(project, [(a, "cat"), (99999, "cat")], "ana", "human")
    with pytest.raises(StoreError, match="source"):
        store.add_labels(project, [(a, "cat")], "ana", "guess")
    assert store.label_events(project) == []


def test_a_snapshot_reads_one_moment_while_others_write(store, project, database):
    a, b = image_ids(store, project)[:2]
    store.add_labels(project, [(a, "cat")], "ana", "human")
    other = Store(database)                                # another process, say
    writer = threading.Thread(target=lambda: other.add_labels(project, [(b, "dog")], "ben", "human"))
    with store.snapshot():
        first = store.current_labels(project)
        writer.start()
        writer.join()
        assert store.current_labels(project) == first == {a: store.class_id(project, "cat")}
        assert len(store.label_events(project)) == 1
    assert len(store.current_labels(project)) == 2         # after it: the write shows


def test_transaction_rolls_back_on_crash(store, project):
    a = image_ids(store, project)[0]
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.db.execute("INSERT INTO label_events (project_id, image_id, class_id, annotator, "
                             "source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                             [project, a, None, "x", "human", 0])
            raise RuntimeError("crash mid-batch")
    assert store.label_events(project) == []


def test_project_errors_name_the_problem(store, project):
    with pytest.raises(StoreError, match="already exists"):
        store.create_project("p", "/x", "{}", ["a", "b"])
    with pytest.raises(StoreError, match="no project 'q'.*known projects: p"):
        store.project("q")
    with pytest.raises(StoreError, match="at least 2 distinct"):
        store.create_project("r", "/x", "{}", ["a", "a"])


def test_concurrent_writers_lose_nothing(store, project):
    ids = image_ids(store, project)

    def annotate(who):
        for i in ids:
            store.add_labels(project, [(i, "cat")], who, "human")

    threads = [threading.Thread(target=annotate, args=(f"a{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.label_events(project)) == 4 * len(ids)


def test_evaluations_keep_per_image_probabilities(store, project):
    ids = image_ids(store, project)[:3]
    version = store.add_model_version(project, n_labels=3, last_event_id=0, class_counts={"cat": 3},
                                      train_seconds=0.1, weights_path="w.npz", backbone="b")
    assert version["version"] == 1
    assert store.add_model_version(project, n_labels=4, last_event_id=0, class_counts={},
                                   train_seconds=0.1, weights_path="w2.npz", backbone="b")["version"] == 2
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], np.float32)
    eid = store.add_evaluation(project, version["id"], {"n_labels": 3, "accuracy": 0.5, "rules": [{"a": 1}]},
                               ids, [1, 2, 3], probs)
    got_ids, got_classes, got_probs = store.holdout_predictions(eid)
    assert got_ids.tolist() == ids and got_classes.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(got_probs, probs)
    assert store.evaluations(project)[0]["rules"] == [{"a": 1}]


def test_database_survives_reopening(database, backend):
    store = Store(database)
    pid = store.create_project("p", "/d", "{}", ["a", "b"])
    store.add_images(pid, [{"path": "x.png", "hash": "h", "split": "pool"}])
    store.add_labels(pid, [(store.images(pid)[0]["id"], "a")], "ana", "human")
    del store
    assert len(Store(database).label_events(pid)) == 1
    if backend == "sqlite":
        conn = sqlite3.connect(database)
        assert conn.execute("select count(*) from label_events").fetchone()[0] == 1


def test_two_annotators_leasing_at_once_never_get_the_same_image(store, project):
    ids = image_ids(store, project)
    granted = {}

    def ask(who):     # 4 people, 2 images each, 6 images: someone gets fewer
        granted[who] = store.lease(project, ids, who, limit=2)

    threads = [threading.Thread(target=ask, args=(f"a{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handed = [i for images in granted.values() for i in images]
    assert sorted(handed) == sorted(ids)                      # every image once, to one person
    assert {lease["image_id"]: lease["annotator"] for lease in store.leases(project)} == {
        i: who for who, images in granted.items() for i in images}


# -- publishing, storage failures, backup ---------------------------------------------------------

def staged_file(folder, name="w.tmp.npz"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"weights")
    return path


def version_fields(last_event_id):
    return {"n_labels": 1, "last_event_id": last_event_id, "class_counts": {}, "train_seconds": 0.1,
            "backbone": "b", "n_auto": 0}


def test_publish_needs_the_training_lease_and_newer_labels(store, project, tmp_path):
    heads = tmp_path / "heads"
    assert store.acquire_training(project, "t1") and not store.acquire_training(project, "t2")
    assert store.publish_version(project, "t2", staged_file(heads), version_fields(5)) is None
    first = store.publish_version(project, "t1", staged_file(heads), version_fields(5), train_ids=[3, 4])
    assert first["version"] == 1 and first["weights_path"].split("/")[-1].startswith("v00001-")
    # A head trained on fewer labels (a slower trainer that lost the race) is discarded.
    stale = staged_file(heads, "s.tmp.npz")
    assert store.publish_version(project, "t1", stale, version_fields(4)) is None
    assert not stale.exists()
    assert store.publish_version(project, "t1", staged_file(heads), version_fields(5)) is None
    second = store.publish_version(project, "t1", staged_file(heads), version_fields(5), force=True)
    assert second["version"] == 2 and second["weights_path"].split("/")[-1].startswith("v00002-")
    assert store.trained_ids(first["id"]).tolist() == [3, 4]
    assert sorted(p.name for p in heads.iterdir()) == sorted(
        [first["weights_path"].split("/")[-1], second["weights_path"].split("/")[-1]])
    store.release_training(project, "t1")
    assert store.acquire_training(project, "t2")


def test_a_failed_publish_leaves_neither_row_nor_weights(store, project, tmp_path):
    heads = tmp_path / "heads"
    store.acquire_training(project, "t")
    with pytest.raises(Exception):
        store.publish_version(project, "t", staged_file(heads), version_fields(1),
                              evaluation={"summary": {"n_labels": 1}, "image_ids": [999999],
                                          "true_class_ids": [1], "probabilities": np.ones((1, 3))})
    assert store.model_versions(project) == [] and list(heads.iterdir()) == []


@sqlite_only
def test_disk_full_is_one_clear_error_and_stores_nothing(store, project):
    a = image_ids(store, project)[0]
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StorageError, match="disk holding the database .* is full: nothing"):
        store.add_labels(project, [(a, "cat")] * 2000, "ana", "human")
    store.db.execute("PRAGMA max_page_count = 1073741823")
    assert store.label_events(project) == []


def test_read_only_database_is_one_clear_error(store, project, backend):
    a = image_ids(store, project)[0]
    # As a read-only file or mount does (root ignores chmod), or a PostgreSQL standby.
    read_only = {"sqlite": "PRAGMA query_only = {}",
                 "postgresql": "SET default_transaction_read_only = {}"}[backend]
    store.db.execute(read_only.format(1 if backend == "sqlite" else "on"))
    with pytest.raises(StorageError, match="read-only: nothing from this action was stored"):
        store.add_labels(project, [(a, "cat")], "ana", "human")
    store.db.execute(read_only.format(0 if backend == "sqlite" else "off"))
    assert store.label_events(project) == []


def test_postgres_failures_read_as_the_same_clear_errors():
    errors = pytest.importorskip("psycopg").errors
    from loop.store import translate

    where = "postgresql://juicer@db/juicer"
    assert "disk holding the database 'postgresql://juicer@db/juicer' is full: nothing" in str(
        translate(errors.DiskFull("could not extend file"), where))
    assert "read-only: nothing from this action was stored" in str(
        translate(errors.ReadOnlySqlTransaction("cannot execute INSERT"), where))
    assert "cannot be used (terminating connection due to administrator command): nothing" in str(
        translate(errors.AdminShutdown("terminating connection due to administrator command"), where))
    assert translate(errors.UniqueViolation("duplicate key"), where) is None   # a bug, not storage


def test_a_deleted_database_refuses_answers_instead_of_losing_them(tmp_path):
    path = tmp_path / "gone.db"
    store = Store(path)
    pid = store.create_project("p", "/d", "{}", ["a", "b"])
    store.add_images(pid, [{"path": "x.png", "hash": "h", "split": "pool"}])
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"gone.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(StorageError, match="was deleted while Juicer ran"):
        store.add_labels(pid, [(1, "a")], "ana", "human")


def test_backup_while_writing_and_restore(tmp_path):
    path = tmp_path / "live.db"
    store = Store(path)
    pid = store.create_project("p", "/d", "{}", ["a", "b"])
    store.add_images(pid, [{"path": f"{i}.png", "hash": f"h{i}", "split": "pool"} for i in range(50)])
    ids = image_ids(store, pid)
    stop = threading.Event()

    def write():
        writer = Store(path)
        k = 0
        while not stop.is_set():
            writer.add_labels(pid, [(ids[k % 50], "a")], "ana", "human")
            k += 1

    thread = threading.Thread(target=write)
    thread.start()
    time.sleep(0.3)
    backup = store.backup(tmp_path / "copy.db")
    stop.set()
    thread.join()
    copied = Store(backup)
    assert copied.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_backup = len(copied.label_events(pid))
    assert 0 < n_backup <= len(store.label_events(pid))
    with pytest.raises(StoreError, match="exists already"):
        store.backup(backup)
    store.add_labels(pid, [(ids[0], "b")], "ben", "human")     # after the backup
    store.restore(backup)
    assert len(Store(path).label_events(pid)) == n_backup       # another connection sees it
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not a"):
        store.restore(tmp_path / "junk.db")


# -- PostgreSQL's own cases (slow, as every PostgreSQL case: see tests/postgres.py) --------------

@pytest.mark.slow
def test_a_postgres_url_or_juicer_db_names_the_database(postgres_server, tmp_path, monkeypatch):
    from loop.project import Paths

    url = postgres_server.new_database(empty=True)      # the store makes its tables
    monkeypatch.setenv("JUICER_DB", url)
    assert Paths(tmp_path).database == url
    pid = Store(Paths(tmp_path).database).create_project("p", "/d", "{}", ["a", "b"])
    over_tcp = postgres_server.url(postgres_server.name_of(url), tcp=True)
    with_password = over_tcp.replace("juicer@", "juicer:secret@")
    store = Store(with_password)
    assert store.project("p")["id"] == pid
    assert store.path == over_tcp and "secret" not in store.path     # messages never show it
    monkeypatch.delenv("JUICER_DB")
    assert Paths(tmp_path).database == tmp_path / "juicer.db"


@pytest.mark.slow
def test_a_dropped_postgres_database_is_one_clear_error(postgres_server):
    import psycopg

    url = postgres_server.new_database()
    store = Store(url)
    pid = store.create_project("p", "/d", "{}", ["a", "b"])
    store.add_images(pid, [{"path": "x.png", "hash": "h", "split": "pool"}])
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {postgres_server.name_of(url)} WITH (FORCE)")
    for _ in range(2):     # the lost connection, then a new one to a database that is gone
        with pytest.raises(StorageError, match="cannot be used .*: nothing from this action was stored"):
            store.add_labels(pid, [(1, "a")], "ana", "human")


@pytest.mark.slow
def test_backup_of_a_postgres_database_says_to_use_pg_dump(postgres_server, tmp_path):
    store = Store(postgres_server.new_database())
    with pytest.raises(StoreError, match="is a PostgreSQL database: use .*pg_dump"):
        store.backup(tmp_path / "copy.db")
    with pytest.raises(StoreError, match="pg_restore"):
        store.restore(tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()


def test_suspects_and_reviews_on_either_database(store, project):
    """The review queue's order (people's hold-out labels first, folder labels last), a review
    as new events only, stale views refused, and each person's rates, on SQLite and PostgreSQL."""
    from loop.people import create_token

    ids = image_ids(store, project)
    store.set_split(ids[:2], "holdout")
    store.add_labels(project, [(ids[0], "cat")], "ana", "human")        # hold-out, by a person
    store.add_labels(project, [(ids[1], "dog")], "folder", "imported")  # hold-out, from the folder
    store.add_labels(project, [(i, "cow") for i in ids[2:5]], "ana", "human")
    store.add_labels(project, [(ids[5], "cat")], "ben", "human")
    create_token(store, "lead", "lead")
    events = store.latest_events(project)
    cat, dog, cow = (store.class_id(project, n) for n in ("cat", "dog", "cow"))
    rows = [{"image_id": i, "split": "holdout" if i in ids[:2] else "pool",
             "event_id": events[i]["id"], "class_id": events[i]["class_id"],
             "annotator": events[i]["annotator"], "source": events[i]["source"],
             "predicted_class_id": dog, "p_given": p, "p_predicted": 0.9, "score": p, "issue": 1}
            for i, p in zip(ids, (0.4, 0.01, 0.05, 0.2, 0.3, 0.02))]
    store.replace_suspects(project, rows, model_version=3)
    assert store.suspects_version(project) == 3
    order = [s["image_id"] for s in store.suspects(project)]
    assert order == [ids[0], ids[5], ids[2], ids[3], ids[4], ids[1]]
    store.review_label(project, ids[2], "lead", "changed", dog, events[ids[2]]["id"])
    store.review_label(project, ids[3], "lead", "kept", None, events[ids[3]]["id"])
    store.review_label(project, ids[4], "lead", "flagged", None, events[ids[4]]["id"])
    with pytest.raises(StoreError, match="changed since"):
        store.review_label(project, ids[2], "lead", "kept", None, events[ids[2]]["id"])
    labels = store.current_labels(project)
    assert labels[ids[2]] == dog and labels[ids[3]] == cow and ids[4] not in labels
    assert [e["source"] for e in store.label_events(project, ids[2])] == ["human", "review"]
    assert [s["image_id"] for s in store.suspects(project)] == [ids[0], ids[5], ids[1]]
    rates = {r["annotator"]: r for r in store.suspicion_by_annotator(project)}
    assert (rates["ana"]["judged"], rates["ana"]["reviewed"], rates["ana"]["corrected"]) == (2, 3, 2)
    assert rates["ben"]["suspected"] == 1
    store.assign_review(project, ids[5], "lead", by="lead")
    assert [s["image_id"] for s in store.suspects(project, reviewer="lead")] == [ids[5]]


def test_images_read_in_chunks_and_copy_groups_in_sql(store, project):
    """What a project of a million images is prepared from: every row once, in id order, across
    chunk boundaries (keyset pages of 3 here), and the copy groups made by the database."""
    other = store.create_project("q", "/other", "{}", ["cat", "dog"])   # rows of another project
    cat, dog = store.class_id(project, "cat"), store.class_id(project, "dog")
    store.add_images(other, [{"path": "x.png", "hash": "h0", "split": "pool"}])
    store.add_images(project, [
        {"path": "c1.png", "hash": "h1", "split": "pool", "known_class_id": cat},    # a copy of 1.png
        {"path": "a.png", "hash": "amb", "split": "pool", "known_class_id": cat},   # one image in
        {"path": "b.png", "hash": "amb", "split": "pool", "known_class_id": dog},   # two folders
        {"path": "h.png", "hash": "h2", "split": "holdout"},                        # a copy of 2.png
        {"path": "bad.png", "hash": "h1", "split": "pool", "status": "skipped", "reason": "broken"}])
    rows = store.images(project)
    assert len(rows) == 10
    for chunk in (1, 3, 10, 11):
        chunks = list(store.iter_images(project, chunk=chunk))
        assert all(len(c) <= chunk for c in chunks) and len(chunks) == -(-10 // chunk)
        assert [r for c in chunks for r in c] == rows                   # each row once, in id order
    pool = [r["id"] for c in store.iter_images(project, split="pool", chunk=3, columns=["hash"])
            for r in c]
    assert pool == [r["id"] for r in store.images(project, split="pool")] and len(pool) == 9
    narrow = next(store.iter_images(project, chunk=3, columns=["hash"]))
    assert [set(r) for r in narrow] == [{"id", "hash"}] * 3
    assert [r["path"] for c in store.iter_images(project, status="skipped", chunk=3) for r in c] == ["bad.png"]
    with pytest.raises(StoreError, match="no column"):
        next(store.iter_images(project, columns=["hash; DROP TABLE images"]))

    by_id = {r["id"]: r for r in rows}
    for chunk in (1, 3, 100):                                          # the same on every page size
        groups = store.pool_copy_groups(project, chunk=chunk)
        assert list(groups["first"]) == sorted(groups["first"])          # in order of first copy
        # Not "amb" (two folder classes) nor "h2" (a copy is in the hold-out); "h1" without its
        # skipped copy.
        assert {by_id[f]["hash"]: (n, c) for f, n, c in zip(groups["first"], groups["size"],
                                                            groups["class_id"])} == {
            "h0": (1, -1), "h1": (2, cat), "h3": (1, -1), "h4": (1, -1), "h5": (1, -1)}
    assert store.split_counts(project) == {"pool": 9, "holdout": 1}
    assert store.ambiguous_hashes(project) == {"amb"}
    h0, h1, c1 = rows[0]["id"], rows[1]["id"], next(r["id"] for r in rows if r["path"] == "c1.png")
    copies = store.copies(project, [h1, h0])            # usable copies only, in id order
    assert [(r["copy_of"], r["id"], r["known_class_id"]) for r in copies] == [
        (h0, h0, None), (h1, h1, None), (h1, c1, cat)]


def test_copies_hashes_and_label_counts_read_without_every_row(store, project):
    """What a project's status, its retrains and its unlabeled draw read of a large project: the
    few images that have copies, the hashes of given ids, and the labels in force per split."""
    other = store.create_project("q", "/other", "{}", ["cat", "dog"])
    store.add_images(other, [{"path": "x.png", "hash": "h0", "split": "pool"}])   # not a copy
    cat, dog = store.class_id(project, "cat"), store.class_id(project, "dog")
    store.add_images(project, [
        {"path": "c1.png", "hash": "h1", "split": "pool", "known_class_id": cat},
        {"path": "a.png", "hash": "amb", "split": "pool", "known_class_id": cat},
        {"path": "b.png", "hash": "amb", "split": "holdout", "known_class_id": dog},
        {"path": "bad.png", "hash": "h2", "split": "pool", "status": "skipped", "reason": "broken"}])
    rows = store.images(project)
    expected = [{k: r[k] for k in ("id", "path", "hash", "split", "known_class_id")} for r in rows
                if sum(o["hash"] == r["hash"] for o in rows) > 1]
    assert store.duplicate_images(project) == expected                 # the skipped copy is no copy
    assert [r["path"] for r in expected] == ["1.png", "c1.png", "a.png", "b.png"]

    ids = [r["id"] for r in rows]
    picked = [ids[7], ids[0], ids[3]] + [ids[k] for k in range(len(ids))] * 200   # 500 per query
    assert store.image_hashes(project, np.array(picked)) == {r["id"]: r["hash"] for r in rows}
    assert store.image_hashes(project, []) == {}
    assert store.image_hashes(other, ids[:2]) == {}                    # another project's ids

    skipped = next(i["id"] for i in store.images(project, status="skipped"))
    store.add_labels(project, [(ids[0], "cat"), (ids[1], "dog"), (ids[8], "cat")], "ana", "human")
    store.add_labels(project, [(ids[1], None)], "ana", "human")        # retracted: not a label
    store.db.execute("INSERT INTO label_events (project_id, image_id, class_id, annotator, source, "
                     "created_at) VALUES (?, ?, ?, 'ana', 'human', 0)", [project, skipped, cat])
    assert store.labeled_counts(project) == {"pool": 1, "holdout": 1}
    for split in ("pool", "holdout"):
        assert store.labeled_counts(project)[split] == len(store.current_labels(project, split))
    assert store.labeled_counts(other) == {}
