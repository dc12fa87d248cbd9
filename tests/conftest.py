"""Shared fixtures. Embeddings are cached under data/cache (git-ignored) and shared by every test,
so the demo set is embedded once per machine, not once per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds; run with -m slow")
    # The default run is the fast one (under 10 minutes on CI's 2 cores); `-m slow` runs the
    # rest (browsers, processes, other backends, Ray, PostgreSQL), as `.ci/run` does after it.
    # A test named on the command line (path::name) runs whatever its marks.
    if not config.option.markexpr and not any("::" in arg for arg in config.args):
        config.option.markexpr = "not slow"
    # Keras' TensorFlow backend calls np.array(tensor) in get_weights; numpy 2 warns about it.
    config.addinivalue_line("filterwarnings",
                            "ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="session")
def shared_cache() -> Path:
    return SHARED_DATA / "cache" / "embeddings"


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory, shared_cache):
    """The demo dataset (animal-mnist, 200 per class) as a project, embedded once."""
    from loop.project import Paths, open_or_create_dataset_project

    paths = Paths(tmp_path_factory.mktemp("demo"), cache_dir=shared_cache)
    return open_or_create_dataset_project("demo", paths, data_dir=SHARED_DATA)


@pytest.fixture(autouse=True)
def _stop_background_trainers():
    """Each test's background trainers stop with it (they poll their database every few
    seconds, and hundreds of idle ones would slow the tests after them)."""
    yield
    from loop import trainer

    with trainer._trainers_lock:
        running = list(trainer._trainers.values())
        trainer._trainers.clear()
    for worker in running:
        worker.close()


@pytest.fixture(autouse=True)
def _keep_main_module():
    """A test that runs a page script may leave it in sys.modules as `__main__`; processes
    started with "spawn" later re-run `__main__` first, and would run that page instead."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
