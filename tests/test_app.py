"""Each page's logic through Streamlit's AppTest: signing in, roles (an annotator sees the Label
and Review pages only, a refused action says why), the Label page storing the browser widget's
answers once each and only for images shown to that person, the lead pages, the Team page's
conflicts, a large auto-accept asking first, and hostile input on the Project page."""

import sys
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, SHARED_DATA

LEAD = "lead-token-for-the-tests-0123456789"


def use_data_root(monkeypatch, root, shared_cache) -> None:
    """Point the app at data root `root` (embeddings from the shared cache) and forget what an
    earlier test's app loaded: each test its own data root, and no module or cache may carry
    another test's project over."""
    monkeypatch.setenv("JUICER_DATA", str(root))
    monkeypatch.setenv("JUICER_CACHE", str(shared_cache))
    for name in [m for m in sys.modules if m == "app" or m.startswith("pages")]:
        sys.modules.pop(name)
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def app(tmp_path, monkeypatch, demo_project, shared_cache):
    monkeypatch.setenv("JUICER_LEAD_TOKEN", LEAD)
    # The demo images are already written out under the shared data root: link, don't copy.
    (tmp_path / "datasets").symlink_to(SHARED_DATA / "datasets")
    use_data_root(monkeypatch, tmp_path, shared_cache)
    return AppTest.from_file(str(REPO / "app.py"), default_timeout=300)


def page(name: str, token: str | None = LEAD) -> AppTest:
    """One page function, run as a signed-in person (the app has made the demo project)."""
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r})\nimport streamlit as st\nimport app\n"
              + (f"st.session_state['token'] = {token!r}\n" if token else "")
              + f"app.open_demo()\napp.{name}()")
    return AppTest.from_string(script, default_timeout=300)


def button(at, prefix):
    return next(b for b in at.button if b.label.startswith(prefix))


def texts(at) -> str:
    return " ".join([m.value for m in at.markdown] + [e.value for e in at.error] + [w.value for w in at.warning]
                    + [i.value for i in at.info] + [s.value for s in at.success] + [c.value for c in at.caption])


def open_project(tmp_path):
    from loop.project import Project
    return Project.open("demo", tmp_path)


def widget_key(at, person="lead") -> str:
    return f"label-demo-{person}"      # pages/label.py: one widget per project and person


def window_of(at) -> list[int]:
    """The image ids the Label page handed to the browser widget (its leases, in order)."""
    from loop.project import Project
    project = Project.open("demo", Path(__import__("os").environ["JUICER_DATA"]))
    drafted = {d["image_id"] for d in project.store.drafts(project.id)}
    return [lease["image_id"] for lease in project.store.leases(project.id)
            if lease["image_id"] not in drafted]


def test_sign_in_is_required_and_a_token_in_the_address_is_taken_out(app):
    at = app.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Juicer"] and "Sign in" in [b.label for b in at.button]
    at.text_input[0].input("not-a-token")          # inside a form: sent with its submit button
    button(at, "Sign in").click().run()
    assert "That token is not valid" in texts(at)
    at.text_input[0].input(LEAD)
    button(at, "Sign in").click().run()
    assert not at.exception and at.title[0].value == "Label: demo"
    fresh = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    fresh.query_params["token"] = LEAD
    fresh.run()
    assert fresh.title[0].value == "Label: demo" and "token" not in fresh.query_params


def test_label_page_stores_widget_answers_once_for_shown_images(app, tmp_path):
    at = app.run()
    at.text_input[0].input(LEAD)
    button(at, "Sign in").click().run()
    key = widget_key(at)
    shown = window_of(at)
    project = open_project(tmp_path)
    assert len(shown) == __import__("pages.label").label.WINDOW
    unseen = next(i["id"] for i in project.store.images(project.id, split="pool")
                  if i["id"] not in shown and i["id"] not in project.store.current_labels(project.id))
    answers = [{"uid": f"u{k}", "image_id": image, "action": "answer", "class": "Cow"}
               for k, image in enumerate(shown[:3])]
    answers.append({"uid": "u-bad", "image_id": unseen, "action": "answer", "class": "Cow"})
    answers.append({"uid": "u-evil", "image_id": shown[3], "action": "answer", "class": "<b>Nope</b>"})
    at.session_state[key] = {"answers": answers}
    at.run()
    assert not at.exception
    drafts = project.store.drafts(project.id, "lead")
    assert sorted(d["image_id"] for d in drafts) == sorted(shown[:3])      # the unseen one is refused
    memory = at.session_state[key + "-acks"]
    assert {"u0", "u1", "u2"} <= set(memory["acked"])
    assert "never shown to lead" in memory["refused"]["u-bad"]
    assert "does not exist" in memory["refused"]["u-evil"]
    at.session_state[key] = {"answers": answers}                          # re-sent after a reconnect
    at.run()
    assert len(project.store.drafts(project.id, "lead")) == 3
    more = [{"uid": f"v{k}", "image_id": image, "action": "answer", "class": "Cat"}
            for k, image in enumerate(window_of(at)[:7])]
    at.session_state[key] = {"answers": more}                             # 3 + 7: a batch of 10
    at.run()
    events = [e for e in project.store.label_events(project.id) if e["source"] == "human"]
    assert len(events) == 10 and {e["annotator"] for e in events} == {"lead"}
    deadline = time.time() + 60
    while project.store.latest_model_version(project.id)["n_labels"] < 20 and time.time() < deadline:
        time.sleep(0.5)
    assert project.store.latest_model_version(project.id)["n_labels"] == 20


def test_annotator_sees_the_label_and_review_pages_and_lead_pages_refuse(app, tmp_path):
    app.run()                                              # the demo project and the lead exist
    from loop.people import create_token
    from loop.store import Store
    ana = create_token(Store(tmp_path / "juicer.db"), "ana", "annotator")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.query_params["token"] = ana
    at.run()
    assert at.title[0].value == "Label: demo" and "Signed in as **ana** (annotator)" in texts(at)
    for name, refused in [("curve_page", "opening the lead pages"), ("rules_page", "opening the lead pages"),
                          ("team_page", "resolving conflicts"), ("project_page", "opening the lead pages")]:
        at = page(name, token=ana).run()
        assert not at.exception
        assert f"Refused: ana is an annotator: {refused} needs the lead role" in texts(at), name
    at = page("review_page", token=ana).run()         # theirs: what a lead sent them, nothing yet
    assert not at.exception and at.title[0].value == "Review: demo"
    assert "Nothing is sent to you for review" in texts(at)
    at = page("curve_page", token=None).run()
    assert "needs a token: sign in first" in texts(at)


@pytest.mark.parametrize("name, expected", [
    ("curve_page", "hold-out accuracy with"),
    ("rules_page", "auto-accepting would decide"),
    ("project_page", "New project from a folder"),
    ("team_page", "No open conflicts"),
])
def test_lead_pages_draw(app, name, expected):
    app.run()
    at = page(name).run()
    assert not at.exception
    assert expected in texts(at) + " ".join(s.value for s in at.subheader)


def test_team_page_shows_and_settles_a_conflict(app, tmp_path):
    app.run()
    from loop.session import LabelingSession
    project = open_project(tmp_path)
    image = [i["id"] for i in project.store.images(project.id, split="pool")
             if i["id"] not in project.store.current_labels(project.id)][0]
    LabelingSession(project, "ana").label_batch([(image, "Cat")])
    LabelingSession(project, "ben").label_batch([(image, "Cow")])
    at = page("team_page").run()
    assert "Conflicts (1 image(s))" in [s.value for s in at.subheader]
    assert "ben said **Cow**" in texts(at) and "in force **Cat** by ana" in texts(at)
    button(at, "Label it Cow").click().run()
    assert not at.exception
    assert project.store.conflicts(project.id) == []
    assert project.store.current_labels(project.id)[image] == project.store.class_id(project.id, "Cow")


def test_team_page_sends_a_conflict_to_a_third_person_once(app, tmp_path):
    app.run()
    from loop.people import create_token
    from loop.session import LabelingSession
    project = open_project(tmp_path)
    image = next(i["id"] for i in project.store.images(project.id, split="pool")
                 if i["id"] not in project.store.current_labels(project.id))
    LabelingSession(project, "ana").label_batch([(image, "Cat")])
    LabelingSession(project, "ben").label_batch([(image, "Cow")])
    create_token(project.store, "cleo", "annotator")
    at = page("team_page").run()
    box = next(s for s in at.selectbox if str(s.key) == f"send-{image}")
    box.set_value("cleo").run(timeout=30)       # a choice that reran the page for ever would time out
    assert not at.exception
    assert [a["annotator"] for a in project.store.assignments(project.id)] == ["cleo"]
    assert "sent to cleo for a third opinion" in texts(at)
    at.run(timeout=30)                           # a later run does not send it again
    assert not at.exception


def test_large_auto_accept_asks_first_and_says_how_many(app, tmp_path):
    app.run()
    at = page("rules_page").run()
    at.slider[0].set_value(0.8).run()
    button(at, "Auto-accept now").click().run()
    assert not at.exception
    project = open_project(tmp_path)
    before = len(project.store.current_labels(project.id))
    confirm = [b for b in at.button if b.label.startswith("Yes, label")]
    if confirm:                                            # more than 50 would be labeled: asks
        assert "with no person looking at them" in texts(at)
        assert len(open_project(tmp_path).store.current_labels(project.id)) == before
        count = int(confirm[0].label.split()[2].replace(",", ""))
        confirm[0].click().run()
        assert not at.exception
        assert f"Accepted {count:,} image(s)" in texts(at)
    else:
        assert "Accepted" in texts(at) or "Nothing was labeled" in texts(at)


@pytest.mark.parametrize("folder, expected", [
    ("/etc", "outside the folders this server imports from"),
    ("../../..", "outside the folders this server imports from"),
    ("/root", "outside the folders this server imports from"),
    ("~", "does not exist"),                   # not the server's home: a folder '~' under imports/
    ("datasets/../../..", "outside the folders this server imports from"),
])
def test_project_form_refuses_folders_outside_the_import_roots(app, tmp_path, folder, expected):
    app.run()
    at = page("project_page").run()
    form_inputs = [t for t in at.text_input if t.label.startswith(("Name", "Folder"))]
    form_inputs[0].input("evil")
    form_inputs[1].input(folder)
    button(at, "Create and embed").click().run()
    assert not at.exception
    assert expected in texts(at)
    from loop.store import Store
    assert [p["name"] for p in Store(tmp_path / "juicer.db").projects()] == ["demo"]


def test_project_form_without_folder_or_upload_says_so(app):
    app.run()
    at = page("project_page").run()
    next(t for t in at.text_input if t.label.startswith("Name")).input("empty")
    button(at, "Create and embed").click().run()
    assert "Choose a folder or upload images" in texts(at)


def test_export_refuses_a_path_and_writes_under_exports(app, tmp_path):
    app.run()
    at = page("project_page").run()
    field = next(t for t in at.text_input if "exports" in t.label)
    field.input("../../outside")
    button(at, "Export ImageFolder copy").click().run()
    assert not at.exception and at.error
    assert not (tmp_path.parent / "outside").exists()
    next(t for t in at.text_input if "exports" in t.label).input("copy1")
    button(at, "Export ImageFolder copy").click().run()
    assert "Copied" in texts(at) and (tmp_path / "exports" / "copy1").is_dir()


def test_curve_page_forecasts_and_runs_the_study(tmp_path, monkeypatch, demo_project, shared_cache):
    """After a few retrains the curve page states the forecast in plain words, and its study
    expander trains on subsets of the current labels and sets predicted beside measured."""
    from loop.people import create_token
    from loop.replay import replay
    from loop.store import Store

    demo_project  # noqa: B018 - the demo images are written out and embedded once
    replay("demo", tmp_path / "run", strategy="random", batch=20, budget=80,
           data_dir=SHARED_DATA, log=lambda *_: None)
    data = tmp_path / "run" / "replay"
    create_token(Store(data / "juicer.db"), "lead", "lead", token=LEAD)
    use_data_root(monkeypatch, data, shared_cache)
    at = AppTest.from_string(f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
                             "import streamlit as st\nimport app\n"
                             f"st.session_state['token'] = {LEAD!r}\n"
                             "st.query_params['project'] = 'replay'\napp.curve_page()",
                             default_timeout=300).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Forecast:" in text
    assert any(words in text for words in ("more labels (80% interval", "is met",
                                           "more images than the project has", "levels off"))
    assert any("bounded curve families" in c.value for c in at.caption)
    at = button(at, "Run the study").click().run()
    assert not at.exception
    report = " ".join(t.value for t in at.text)
    assert "forecast at the full pool" in report and "measured at the full pool" in report


def test_lead_changes_settings_and_a_bad_value_is_refused(app, tmp_path):
    app.run()
    at = page("project_page").run()
    field = next(n for n in at.number_input if n.label.startswith("Share of labels"))
    field.set_value(0.25)
    button(at, "Save settings").click().run()
    assert "Saved." in texts(at)
    assert open_project(tmp_path).settings.overlap_share == 0.25
    at = page("project_page").run()
    next(n for n in at.number_input if n.label.startswith("Share of labels")).set_value(3.0)
    button(at, "Save settings").click().run()
    assert "Not saved: overlap_share must lie in [0, 1]" in texts(at)
    assert open_project(tmp_path).settings.overlap_share == 0.25


def test_a_deleted_database_is_said_plainly_and_nothing_is_accepted(app, tmp_path):
    at = app.run()
    at.text_input[0].input(LEAD)
    button(at, "Sign in").click().run()
    shown = window_of(at)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"juicer.db{suffix}").unlink(missing_ok=True)
    at.session_state[widget_key(at)] = {"answers": [{"uid": "d1", "image_id": shown[0],
                                                     "action": "answer", "class": "Cow"}]}
    at.run()
    assert not at.exception
    assert any("was deleted while Juicer ran" in e.value for e in at.error)
