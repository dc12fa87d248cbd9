"""The Curve page through Streamlit's AppTest, on small synthetic projects (tests/test_curve.py
writes their evaluations straight into the store): the forecast said within what the pool allows,
a target met said from the measurement, text and chart drawn from one target in one run, auto-
accepted points apart, the majority-class warning, balanced accuracy as the forecast's target,
percentages for people, and the gallery's version slider, diff and a lead's correction."""

from __future__ import annotations


import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO
from tests.test_app import LEAD, button, texts, use_data_root
from tests.test_browser import CHROMIUM, FLAGS, server  # noqa: F401 - server: a real `streamlit run app.py`
from tests.test_curve import RISING, synthetic_project


@pytest.fixture
def curve_app(tmp_path, monkeypatch, shared_cache):
    """Opens the Curve page of a synthetic project: call with the project's points."""
    from loop.people import create_token

    def open_page(points, then: str = "", **kwargs) -> AppTest:
        project = synthetic_project(tmp_path, points, **kwargs)
        create_token(project.store, "lead", "lead", token=LEAD)
        use_data_root(monkeypatch, tmp_path, shared_cache)
        script = (f"import sys; sys.path.insert(0, {str(REPO)!r})\nimport streamlit as st\n"
                  f"from pages.curve import curve_page\nst.session_state['token'] = {LEAD!r}\n"
                  "st.query_params['project'] = 'synth'\ncurve_page()\n" + then)
        at = AppTest.from_string(script, default_timeout=120).run()
        assert not at.exception, at.exception
        return at

    return open_page


def forecast_text(at) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Forecast:**"))


def test_forecast_stays_within_the_pool_and_moves_with_the_target_in_one_run(curve_app):
    at = curve_app(RISING, pool=120)
    assert "hold-out accuracy with **64** labels from people" in texts(at)
    assert "balanced accuracy" in texts(at)
    at.slider(key="target").set_value(0.99).run()
    said = forecast_text(at)
    assert "1,000,000" not in said and "99%" in said
    assert "Labeling all 56 remaining images is forecast to reach about" in said
    assert "99% would need more images than the project has" in said
    # the chart of the same run is drawn for the same target (its legend names it)
    assert at.session_state["target"] == 0.99
    assert len(at.get("image")) >= 1


def test_the_sidebar_shows_the_model_the_page_read(curve_app, monkeypatch):
    """The page's figures and the sidebar's come from one read: the sidebar does not read the
    store again after the page (a retrain scored in between made them disagree: v1 on the page,
    v2 in the sidebar)."""
    from loop.project import Project

    reads = []
    figures = Project.figures
    monkeypatch.setattr(Project, "figures", lambda self: reads.append(
        self.store.db.conn.in_transaction) or figures(self))
    at = curve_app(RISING, then="from pages.common import sidebar_figures\nsidebar_figures()")
    assert reads == [True]                        # once, inside the page's snapshot
    version = len(RISING)
    assert f"model v{version}," in texts(at)
    assert any(f"Model **v{version}**" in c.value for c in at.sidebar.caption)


def test_a_met_target_is_said_plainly(curve_app):
    at = curve_app(RISING)
    at.slider(key="target").set_value(0.75).run()
    assert "Measured 80% accuracy at 64 labels; the target (75%) is met." in forecast_text(at)
    assert "reached already by the forecast" not in texts(at)


def test_auto_accepted_points_are_apart_and_noted(curve_app):
    at = curve_app(RISING + [(64, 1100, 0.95)])
    assert "with **64** labels from people and 1,100 auto-accepted" in texts(at)
    assert any("auto-accepted labels in force" in c.value and "fitted only on the retrains without"
               in c.value for c in at.caption)


def test_a_model_below_the_majority_class_is_flagged_and_balanced_accuracy_can_be_the_target(curve_app):
    points = [(2, 0, 0.43), (4, 0, 0.45), (8, 0, 0.5)]
    at = curve_app(points, holdout=(69, 31))
    warning = " ".join(w.value for w in at.warning)
    assert "no better than always answering 'Cat' (69%" in warning
    at.radio(key="metric").set_value("balanced_accuracy").run()
    assert not at.exception
    assert "balanced accuracy" in forecast_text(at)


def test_per_class_table_and_study_text_are_for_people(curve_app):
    at = curve_app(RISING)
    table = at.dataframe[0].value
    assert list(table.columns) == ["class", "accuracy (%)", "hold-out images"]
    assert table["accuracy (%)"].max() <= 100 and table["accuracy (%)"].min() >= 1


def test_gallery_steps_through_versions_compares_and_relabels(curve_app, tmp_path):
    at = curve_app([(4, 0, 0.5), (8, 0, 0.8), (16, 0, 0.9)])
    slider = at.select_slider(key="gallery_version")
    assert slider.value == "v3 · 16 labels" and len(slider.options) == 3
    assert any(m.value.startswith("**v3 against v2:") for m in at.markdown)
    slider.set_value("v2 · 8 labels").run()
    assert any(m.value.startswith("**v2 against v1:") and "fixed" in m.value for m in at.markdown)
    at.selectbox(key="gallery_show").set_value("fixed").run()
    captions = [c.value for c in at.caption if "v1:" in c.value]
    assert captions and all("✗" in c.split("v1:")[1] for c in captions)   # each was wrong in v1
    # play: from the newest version it starts again from the first
    at.select_slider(key="gallery_version").set_value("v3 · 16 labels").run()
    button(at, "Play through").click().run()
    assert at.session_state["gallery_playing"] and at.select_slider(key="gallery_version").value == "v1 · 4 labels"
    button(at, "Pause").click().run()
    assert not at.session_state["gallery_playing"]
    # a lead's correction: a label event, said to count from the next evaluation, and marked on
    # the image until then; nothing already scored changes
    at.selectbox(key="gallery_show").set_value("all").run()
    first = at.selectbox(key="gallery_relabel_image").options[0]
    labeled = first.split("labeled ")[1].split(",")[0]
    other = "Dog" if labeled == "Cat" else "Cat"
    at.selectbox(key="gallery_relabel_class").set_value(other)
    at.button(key="FormSubmitter:gallery_relabel-Set this label").click().run()
    assert not at.exception
    assert "counts from the next evaluation" in " ".join(s.value for s in at.success)
    at.run()
    assert any(f"relabeled {other} (next evaluation)" in c.value for c in at.caption)
    from loop.project import Project
    project = Project.open("synth", tmp_path)
    review = [e for e in project.store.label_events(project.id) if e["source"] == "review"]
    assert len(review) == 1 and review[0]["annotator"] == "lead" and review[0]["origin"] == "gallery"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium (.ci/run does)")
def test_in_a_browser_the_page_stays_still_and_redraws_when_a_retrain_is_scored(server):  # noqa: F811
    """AppTest cannot see the timer: in chromium, nothing visible greys out while no evaluation
    arrives, and labels stored meanwhile (the server's trainer retrains) redraw the page."""
    from playwright.sync_api import sync_playwright

    from loop.store import Store
    from tests.test_browser import LEAD as BROWSER_LEAD

    url, data = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(url + f"/?token={BROWSER_LEAD}", timeout=180_000)
        page.get_by_text("Signed in as").wait_for(timeout=180_000)
        page.get_by_role("link", name="Curve", exact=True).click()
        summary = page.locator("p", has_text="hold-out accuracy with").first
        summary.wait_for(timeout=120_000)
        before = summary.inner_text()
        page.wait_for_timeout(1500)
        greyed = set()
        for _ in range(28):          # 7 s: more than one poll of the watcher
            greyed |= set(page.evaluate("""() => [...document.querySelectorAll('[data-stale="true"]')]
                .filter(e => { const r = e.getBoundingClientRect(); return r.width * r.height > 0; })
                .map(e => e.getAttribute('data-testid'))"""))
            page.wait_for_timeout(250)
        assert not greyed, f"visible elements greyed out with nothing new: {greyed}"
        store = Store(data / "juicer.db")
        pid = store.project("demo")["id"]
        labeled = store.current_labels(pid)
        free = [i for i in store.images(pid, split="pool") if i["id"] not in labeled][:10]
        store.add_labels(pid, [(i["id"], i["known_class_id"]) for i in free], annotator="sim",
                         source="simulated")
        page.wait_for_function("b => ![...document.querySelectorAll('p')].some(p => p.innerText === b)",
                               arg=before, timeout=90_000)
        assert "model v2" in page.locator("p", has_text="hold-out accuracy with").first.inner_text()
        browser.close()


def test_backbone_panel_offers_what_is_not_embedded_and_compares_only_two_or_more(curve_app):
    from models.backbones import BACKBONES

    at = curve_app(RISING)      # a synthetic project: no embeddings cached for any option
    assert "Embedded: none yet" in [m.value for m in at.markdown]
    assert at.multiselect(key="embed_more").options == list(BACKBONES)
    assert not [b for b in at.button if b.key == "compare_backbones"]
