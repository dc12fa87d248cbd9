"""The lead pages never mislead, through Streamlit's AppTest: the sidebar's figures are read after
the page's actions (auto-accept, undo, a retrain), the Rules page speaks in percentages and
names people read and draws its history in four colours told apart, and the Project page says
what an empty form lacks, opens the project it created and says how the files found became
images (ready, skipped, copies)."""

import json
import shutil
import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, SHARED_DATA
from tests.test_app import LEAD, button, texts, use_data_root
from tests.test_project import small_folder


@pytest.fixture
def lead_app(tmp_path, monkeypatch, demo_project, shared_cache):
    """A data root whose one project is small (90 images, 3 seeds per class) and the lead's."""
    from loop.project import Paths, create_project
    from loop.settings import Settings
    from loop.store import Store

    folder = small_folder(demo_project.root, tmp_path / "imports" / "animals", per_class=30)
    create_project(Store(tmp_path / "juicer.db"), "small", folder, Paths(tmp_path, cache_dir=shared_cache),
                   settings=Settings(seeds_per_class=3, holdout_fraction=0.3))
    monkeypatch.setenv("JUICER_LEAD_TOKEN", LEAD)
    monkeypatch.setenv("JUICER_PROJECT", "small")
    monkeypatch.setenv("JUICER_DATASET", str(folder))
    (tmp_path / "datasets").symlink_to(SHARED_DATA / "datasets")
    use_data_root(monkeypatch, tmp_path, shared_cache)
    return tmp_path


def lead_page(name: str) -> AppTest:
    """A page as `main` runs it: the page, then the sidebar's figures."""
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r})\nimport streamlit as st\nimport app\n"
              "from pages.common import sidebar_figures\n"
              f"st.session_state['token'] = {LEAD!r}\napp.open_demo()\n"
              f"try:\n    app.{name}()\nfinally:\n    sidebar_figures()\n")
    return AppTest.from_string(script, default_timeout=300)


def sidebar_text(at) -> str:
    return " ".join(c.value for c in at.sidebar.caption)


def project(root):
    from loop.project import Project
    return Project.open("small", root)


def test_sidebar_and_rules_figures_follow_auto_accept_undo_and_retrains(lead_app):
    at = lead_page("rules_page").run()
    assert not at.exception
    small = project(lead_app)
    assert "**9** labels by people · **0** auto-accepted" in sidebar_text(at)
    assert "Model **v1** (trained on 9 labels)" in sidebar_text(at)
    at.slider[0].set_value(0.8).run()
    # Audit first: a sample of the pool goes to people, nothing is labeled by the machine.
    button(at, "Send an audit to people now").click().run()
    assert not at.exception
    from loop import autoaccept
    audits = [r["image_id"] for r in small.store.audits(small.id)]
    assert audits and f"sent {len(audits):,} to people as an audit" in texts(at)
    assert f"0 of {len(audits):,} image(s) of the audit of model v1 answered by people" in texts(at)
    assert autoaccept.auto_accepted(small) == []
    truth = {i["id"]: i["known_class_id"] for i in small.store.images(small.id)}
    small.store.add_labels(small.id, [(i, truth[i]) for i in audits], "ana", "human")
    at.run()
    button(at, "Auto-accept now").click().run()
    confirm = [b for b in at.button if b.label.startswith("Yes, label")]
    if confirm:                                       # over 50: asked first, nothing labeled yet
        assert "with no person looking at them" in texts(at)
        confirm[0].click().run()
    assert not at.exception
    accepted = len(autoaccept.auto_accepted(small))
    assert accepted > 0 and f"Accepted {accepted:,} image(s)" in texts(at)
    assert "lower bound on precision" in texts(at) and "promised 80.0%" in texts(at)
    # The same run's status line and sidebar already count them.
    assert f"**{accepted:,}** label(s) in force were auto-accepted" in texts(at)
    assert f"· **{accepted:,}** auto-accepted" in sidebar_text(at)
    button(at, f"Undo all {accepted:,}").click().run()
    assert not at.exception
    assert f"Retracted {accepted:,} auto-accepted label(s)" in texts(at)
    assert "**0** label(s) in force were auto-accepted" in texts(at)
    assert not [b for b in at.button if b.label.startswith("Undo all")]
    assert "· **0** auto-accepted" in sidebar_text(at)
    # Labels and retrains made elsewhere (another tab, the command line) show on the next run.
    pool = [i["id"] for i in small.store.images(small.id, split="pool")
            if i["id"] not in small.store.current_labels(small.id)][:6]
    small.store.add_labels(small.id, [(i, truth[i]) for i in pool], "ana", "human")
    people = 9 + len(audits) + 6
    deadline = time.time() + 60                   # the app's background trainer retrains
    while small.store.evaluations(small.id)[-1]["n_labels"] != people and time.time() < deadline:
        time.sleep(0.3)
    at.run()
    latest = small.store.evaluations(small.id)[-1]
    assert f"**{people}** labels by people" in sidebar_text(at)
    assert (f"Model **v{latest['version']}** (trained on {people} labels): **{latest['accuracy']:.1%}**"
            in sidebar_text(at))
    assert f"Model v{latest['version']}, trained on {people} labels" in texts(at)


def test_rules_page_speaks_in_percentages_and_draws_four_colours(lead_app):
    at = lead_page("rules_page").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table.columns) == ["Rule", "Decides", "Accuracy on decided", "Errors per 100 accepted",
                                   "Images decided"]
    assert table["Rule"][0] == "always take the top class" and table["Decides"][0] == "100%"
    assert all(v == "-" or v.endswith("%") for v in table["Accuracy on decided"])
    assert all(v == "-" or len(v.split(".")[-1]) == 1 for v in table["Errors per 100 accepted"])
    charts = [json.loads(e.proto.spec) for e in at.get("vega_lite_chart")]
    history = next(c for c in charts if "strokeDash" in c.get("encoding", {}))
    colour = history["encoding"]["color"]["scale"]
    assert len(set(colour["range"])) == len(colour["domain"]) == 4
    assert history["encoding"]["y"]["axis"]["format"] == "%"
    assert not any(word in texts(at) for word in ("errors_per_100", "n_decided", "coverage_0"))


def test_empty_create_form_says_what_is_missing(lead_app):
    at = lead_page("project_page").run()
    button(at, "Create and embed").click().run()
    assert not at.exception
    assert "Choose a folder or upload images, and give the project a name." in texts(at)
    assert "holds no image" not in texts(at)
    next(t for t in at.text_input if t.label.startswith("Folder")).input("animals")
    button(at, "Create and embed").click().run()
    assert "Give the project a name" in texts(at)


def test_created_project_is_opened_and_its_files_accounted_for(lead_app):
    folder = small_folder(project(lead_app).root, lead_app / "imports" / "mini", per_class=3)
    first = min((folder / "Cat").iterdir())
    shutil.copy(first, folder / "Cat" / "copy-of-cat.png")          # a byte-for-byte copy
    (folder / "Cow" / "broken.png").write_bytes(b"not an image")    # skipped, with why
    at = lead_page("project_page").run()
    next(t for t in at.text_input if t.label.startswith("Name")).input("mini")
    next(t for t in at.text_input if t.label.startswith("Folder")).input("mini")
    button(at, "Create and embed").click().run()
    assert not at.exception
    assert at.sidebar.selectbox[0].value == "mini"                  # the sidebar opened it
    assert next(t for t in at.text_input if t.label.startswith("Name")).value == ""   # a fresh form
    assert "**mini**: 10 images in" in texts(at)
    note = next(s.value for s in at.success if s.value.startswith("Created **mini**"))
    assert "11 file(s) found, **10 images ready**, 1 skipped" in note
    assert "2 of the ready images are byte-for-byte copies of each other (1 group(s)" in note
    expanders = [e.label for e in at.expander]
    assert "1 file(s) skipped, and why" in expanders
    assert "2 file(s) that are copies of another (1 group(s))" in expanders
    at.run()                                                        # stays open, said once
    assert at.sidebar.selectbox[0].value == "mini" and not at.success
    at.sidebar.selectbox[0].select("small").run()                   # and the chooser still works
    assert "**small**: 90 images in" in texts(at) and at.query_params["project"] in ("small", ["small"])
    bookmark = lead_page("project_page")                            # a bookmark names the project
    bookmark.query_params["project"] = "mini"
    assert bookmark.run().sidebar.selectbox[0].value == "mini"


def test_a_new_token_is_listed_at_once(lead_app):
    at = lead_page("project_page").run()
    form = [t for t in at.text_input if t.label == "Name"]
    form[0].input("ana")
    button(at, "Create a token").click().run()
    assert not at.exception
    assert "Token for ana (annotator)" in texts(at) and len(at.code) == 1
    people = at.dataframe[-1].value
    assert "ana" in list(people["name"])
    at.run()
    assert not at.code                                              # shown this once


@pytest.mark.slow
def test_the_backbone_panel_fine_tunes_in_the_background_and_goes_back(lead_app, shared_cache):
    """The Project page offers fine-tuning on this small project, runs it on the trainer's worker
    (the page returns at once), then says what heads train on and lists the job; adopted, it
    offers the way back."""
    from loop import tuning
    from loop.trainer import trainer_for

    at = lead_page("project_page").run()
    assert not at.exception
    assert "Heads train on **efficientnet-lite0** as it was trained on ImageNet (frozen)." in texts(at)
    assert "Offered because the project is small (90 images)" in texts(at)
    button(at, "Fine-tune the backbone's top block").click().run()
    assert not at.exception and "Fine-tuning started in the background." in texts(at)
    small = project(lead_app)
    try:
        assert trainer_for(small).wait_tuned(timeout=600) and not trainer_for(small).tune_errors
        row = small.store.backbone_versions(small.id)[-1]
        assert row["status"] in ("adopted", "kept-frozen") and tuning.running_job(small) is None
        at.run()
        assert not at.exception
        shown = " ".join(str(df.value.to_dict()) for df in at.dataframe)
        assert row["key"] in shown and row["status"] in shown
        if row["status"] == "adopted":
            assert f"Heads train on **{row['key']}**" in texts(at)
            button(at, "Go back to the frozen backbone").click().run()
            assert "Heads train on efficientnet-lite0 again from the next retrain." in texts(at)
            assert small.features_key == "efficientnet-lite0"
        else:
            assert "Heads train on **efficientnet-lite0**" in texts(at)
    finally:
        for job in small.store.backbone_versions(small.id):
            shutil.rmtree(shared_cache / job["key"], ignore_errors=True)
