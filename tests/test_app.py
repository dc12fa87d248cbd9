"""The page opens the demo project, and a submitted batch is stored and retrained on."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, SHARED_DATA


@pytest.fixture
def app(tmp_path, monkeypatch, demo_project, shared_cache):
    monkeypatch.setenv("JUICER_DATA", str(tmp_path))
    monkeypatch.setenv("JUICER_CACHE", str(shared_cache))
    # The demo images are already written out under the shared data root: link, don't copy.
    (tmp_path / "datasets").symlink_to(SHARED_DATA / "datasets")
    return AppTest.from_file(str(REPO / "app.py"), default_timeout=300)


def metrics(at):
    return {m.label: m.value for m in at.metric}


def test_opens_demo_and_labels_a_batch(app):
    at = app.run()
    assert not at.exception
    before = metrics(at)
    assert before["images"] == "2000" and before["model versions"] == "1"
    submit = at.button[0]
    submit.click().run()
    assert "Enter your name" in at.error[0].value          # every label records who gave it
    at.text_input[0].input("ana")
    at.button[0].click().run()
    assert not at.exception
    after = metrics(at)
    assert int(after["labeled (training)"]) == int(before["labeled (training)"]) + 6
    assert after["model versions"] == "2"
