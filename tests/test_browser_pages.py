"""A real browser opens a lead page's own address (http://host/curve) directly, as a bookmark or a
reload does, first thing on a new server: the page shows, nothing answers 404 (Streamlit's
browser code looks for the server one folder down first unless the page names it:
`PageAddresses` in app.py), the console has no error (no "Failed to fetch metrics config": usage
statistics are off in .streamlit/config.toml, which this server is left to read), and no request
leaves for another host. And the Review page changes a suspected label in a real browser."""

import time
from urllib.parse import urlparse

import pytest

from tests.test_browser import CHROMIUM, FLAGS, serve_app, settle

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium (.ci/run does)")]
LEAD = "browser-pages-lead-token-0123456789"


@pytest.fixture
def plain_server(tmp_path, demo_project, shared_cache):
    """`streamlit run app.py` with only the flags a person would give (no usage-statistics flag:
    the repository's config.toml must turn them off)."""
    for url, _ in serve_app(tmp_path, shared_cache, LEAD):
        yield url


def test_a_page_address_opened_directly_loads_cleanly_and_calls_nowhere(plain_server, tmp_path):
    from playwright.sync_api import sync_playwright

    url = plain_server
    console, failures, outside = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("requestfailed", lambda r: failures.append(f"failed {r.url}: {r.failure}")
                if "ERR_ABORTED" not in (r.failure or "") else None)     # aborted: we navigated on
        page.on("request", lambda r: outside.append(r.url)
                if urlparse(r.url).scheme in ("http", "https", "ws", "wss")
                and urlparse(r.url).hostname != "127.0.0.1" else None)
        # The server's first visitor opens a page's address (pages/ is not taken for Streamlit's
        # old pages folder), signing in with the link's token (then kept in a cookie) ...
        page.goto(url + f"/curve?token={LEAD}", timeout=180_000)
        page.get_by_role("heading", name="Learning curve: demo").wait_for(timeout=180_000)
        assert urlparse(page.url).path == "/curve"
        page.wait_for_function("() => document.cookie.includes('juicer_token=')", timeout=30_000)
        for path, heading in (("/rules", "Decision rules: demo"), ("/review", "Review: demo"),
                              ("/project", "Projects")):
            page.goto(url + path, timeout=60_000)                  # ... then as a bookmark does
            page.get_by_role("heading", name=heading).wait_for(timeout=60_000)
            assert urlparse(page.url).path == path
        page.wait_for_timeout(1500)                                 # late requests, metrics
        page.screenshot(path=str(tmp_path / "project-opened-directly.png"), full_page=True)
        page.get_by_role("link", name="Curve").click()             # and moving on from there works
        page.get_by_role("heading", name="Learning curve: demo").wait_for(timeout=60_000)
        browser.close()
    assert failures == [], failures
    assert outside == [], outside
    assert not [m for m in console if m.startswith("error") or "metrics config" in m], console


def test_the_review_page_changes_a_suspected_label_in_the_browser(plain_server, tmp_path):
    """Labels with every eighth one wrong, retrained and judged by the server's own trainer; the
    lead opens /review, presses the first card's Change button, and the store holds the review's
    label event (the label given still in the log before it)."""
    from playwright.sync_api import sync_playwright

    from loop import suspects
    from loop.project import Project

    url = plain_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(url + f"/?token={LEAD}", timeout=180_000)         # the demo project is made
        page.get_by_role("heading", name="Label: demo").wait_for(timeout=180_000)
        project = Project.open("demo", tmp_path / "data")
        store = project.store
        names = {c["id"]: c["name"] for c in project.class_rows}
        labeled = store.current_labels(project.id)
        free = [i for i in store.images(project.id, split="pool") if i["id"] not in labeled][:80]
        trained = len(store.current_labels(project.id, split="pool")) + len(free)   # seeds and these
        classes = project.class_names
        store.add_labels(project.id, [
            (i["id"], classes[(classes.index(names[i["known_class_id"]]) + (k % 8 == 0)) % len(classes)])
            for k, i in enumerate(free)], "ann-a", "human")
        deadline = time.time() + 240              # the server's trainer retrains, then judges
        rows = []
        while time.time() < deadline and not rows:
            latest = store.latest_model_version(project.id)
            if (latest and latest["n_labels"] >= trained
                    and store.suspects_version(project.id) == latest["version"]):
                rows = suspects.review_queue(project)
            time.sleep(1)
        assert rows, "the server's trainer judged no label as suspect"
        page.goto(url + "/review", timeout=60_000)
        page.get_by_role("heading", name="Review: demo").wait_for(timeout=60_000)
        first = suspects.review_queue(project)[0]
        change = page.get_by_role("button", name=f"Change to {first['predicted']}").first
        change.wait_for(timeout=60_000)
        settle(page)
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
        change.click()
        deadline = time.time() + 60
        while time.time() < deadline and store.label_events(project.id, first["image_id"])[-1][
                "source"] != "review":
            time.sleep(0.5)
        events = store.label_events(project.id, first["image_id"])
        assert events[-1]["source"] == "review" and events[-1]["annotator"] == "lead"
        assert events[-1]["class_id"] == store.class_id(project.id, first["predicted"])
        assert first["event_id"] in [e["id"] for e in events[:-1]]       # the old label stays
        page.get_by_text(f"Image {first['image_id']}: label changed to").wait_for(timeout=30_000)
        settle(page)
        page.screenshot(path=str(tmp_path / "review-changed.png"), full_page=True)
        page.goto(url + "/team", timeout=60_000)
        panel = page.get_by_text("Suspected errors per person")
        panel.wait_for(timeout=60_000)
        settle(page)
        panel.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "team.png"), full_page=True)
        browser.close()
