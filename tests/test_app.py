"""Each page's logic through Streamlit's AppTest: the demo project opens, a batch labeled with the
buttons is stored with its annotator and retrained on, and the curve, rules and project pages draw."""

import sys
import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, SHARED_DATA


@pytest.fixture
def app(tmp_path, monkeypatch, demo_project, shared_cache):
    monkeypatch.setenv("JUICER_DATA", str(tmp_path))
    monkeypatch.setenv("JUICER_CACHE", str(shared_cache))
    # The demo images are already written out under the shared data root: link, don't copy.
    (tmp_path / "datasets").symlink_to(SHARED_DATA / "datasets")
    # Each test its own data root: no module or cache may carry another test's project over.
    sys.modules.pop("app", None)
    st.cache_resource.clear()
    st.cache_data.clear()
    return AppTest.from_file(str(REPO / "app.py"), default_timeout=300)


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def button(at, prefix):
    return next(b for b in at.button if b.label.startswith(prefix))


def test_label_page_needs_a_name_then_labels_a_batch(app, tmp_path):
    at = app.run()
    assert not at.exception
    assert "Enter your name" in at.warning[0].value
    at.text_input[0].input("ana").run()
    assert metric(at, "model versions") == "1" and metric(at, "labeled (training)") == "10"
    for _ in range(10):
        button(at, "Confirm").click().run()
        assert not at.exception
    assert any("Batch submitted" in i.value for i in at.info)
    from loop.project import Project
    project = Project.open("demo", tmp_path)
    events = [e for e in project.store.label_events(project.id) if e["source"] == "human"]
    assert len(events) == 10 and {e["annotator"] for e in events} == {"ana"}
    deadline = time.time() + 60
    while project.store.latest_model_version(project.id)["version"] < 2 and time.time() < deadline:
        time.sleep(0.5)
    assert project.store.latest_model_version(project.id)["n_labels"] == 20


def test_undo_skip_and_class_keys(app, tmp_path):
    at = app.run()
    at.text_input[0].input("ben").run()
    button(at, "3 Cat").click().run()
    assert any("1 of 10 answers" in c.value for c in at.caption)
    button(at, "Undo").click().run()
    assert any("0 of 10" in c.value for c in at.caption)
    button(at, "Skip").click().run()
    button(at, "Submit batch now").click().run()
    assert any("Submitted 0 label(s)" in i.value for i in at.info)


@pytest.mark.parametrize("page, expected", [
    ("curve_page", "hold-out accuracy with"),
    ("rules_page", "auto-accepting would decide"),
    ("project_page", "New project from a folder"),
])
def test_lead_pages_draw(app, page, expected):
    app.run()                                   # creates the demo project
    at = AppTest.from_string(f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
                             f"import app\napp.open_demo()\napp.{page}()", default_timeout=300).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown) + " ".join(s.value for s in at.subheader)
    assert expected in text


def test_rules_page_previews_and_turns_on_auto_accept(app, tmp_path):
    app.run()
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
              "import app\napp.open_demo()\napp.rules_page()")
    at = AppTest.from_string(script, default_timeout=300).run()
    button(at, "Preview the threshold").click().run()
    assert not at.exception
    assert any("Threshold" in i.value for i in at.info) or any("No threshold" in w.value for w in at.warning)
    button(at, "Turn on").click().run()
    from loop.project import Project
    assert Project.open("demo", tmp_path).settings.auto_accept_precision == 0.95


def test_curve_page_forecasts_and_runs_the_study(tmp_path, monkeypatch, demo_project, shared_cache):
    """After a few retrains the curve page states the forecast in plain words, and its study
    expander trains on subsets of the current labels and sets predicted beside measured."""
    from loop.replay import replay

    demo_project  # noqa: B018 - the demo images are written out and embedded once
    replay("demo", tmp_path / "run", strategy="random", batch=20, budget=80,
           data_dir=SHARED_DATA, log=lambda *_: None)
    monkeypatch.setenv("JUICER_DATA", str(tmp_path / "run" / "replay"))
    monkeypatch.setenv("JUICER_CACHE", str(shared_cache))
    sys.modules.pop("app", None)
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_string(f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
                             "import streamlit as st\nimport app\n"
                             "st.session_state['project'] = 'replay'\napp.curve_page()",
                             default_timeout=300).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Forecast:" in text
    assert "more labels (80% interval" in text or "not reachable" in text or "reached already" in text
    assert any("bounded curve families" in c.value for c in at.caption)
    at = button(at, "Run the study").click().run()
    assert not at.exception
    report = " ".join(t.value for t in at.text)
    assert "forecast at the full pool" in report and "measured at the full pool" in report
