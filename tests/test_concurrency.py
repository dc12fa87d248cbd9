"""Several processes on one database, and processes killed mid-work (the small versions of
bench/stress.py and bench/crash.py, whose figures at full size are in bench/README.md)."""

import sys

import pytest

from tests.conftest import REPO, SHARED_DATA

# Both tests on SQLite and on PostgreSQL: JUICER_DB names the test's database for the processes.
from tests.postgres import backend, database, postgres_server, use_backend  # noqa: F401

sys.path.insert(0, str(REPO / "bench"))

pytestmark = pytest.mark.slow


def test_annotator_processes_with_their_own_trainers_lose_and_double_nothing(tmp_path, demo_project):
    import stress

    figures = stress.run(annotators=3, labels=60, dataset="demo:60", app_servers=0,
                         data_dir=SHARED_DATA, work=tmp_path, log=lambda *_: None)
    assert figures["exit_codes"] == [0, 0, 0]
    assert figures["answers"] == 180 and figures["labels_written"] > 150
    for key in ("lost", "answered_twice", "leased_to_two_at_once", "versions_out_of_order",
                "versions_without_weights", "versions_without_evaluation", "holdout_trained_on"):
        assert figures[key] == 0, (key, figures)
    assert figures["versions"] >= 2


def test_sigkill_inside_submit_and_retrain_loses_no_confirmed_label(tmp_path, demo_project):
    import crash

    figures = crash.run(rounds=4, dataset="demo:60", data_dir=SHARED_DATA, work=tmp_path,
                        log=lambda *_: None)
    assert figures["confirmed_labels"] > 0
    assert figures["confirmed_lost"] == 0 and figures["rounds_with_problems"] == 0, figures
