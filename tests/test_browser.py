"""A real browser: Debian's chromium, driven by Playwright, signs in to the real app on the demo
project and labels with the keyboard faster than the page can redraw (10-150 ms between keys), then
checks in the database that every stored answer names the image that was on screen when its key was
pressed, and that nothing typed was lost. Then the retrain shows on the lead pages, and an
annotator's browser is refused the lead pages. Screenshots of each page go to the test's folder."""

import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO, SHARED_DATA
from tests.test_label_widget import CAPTURE, percentile

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium (.ci/run does)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
LEAD = "browser-test-lead-token-0123456789"
CLASSES = ["Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_app(tmp_path, shared_cache, token: str, *flags: str):
    """`streamlit run app.py` on a fresh data root under `tmp_path` (the demo images linked), with
    `token` as the first lead's and `flags` added; yields (url, data root), stops it after."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "datasets").symlink_to(SHARED_DATA / "datasets")
    port = free_port()
    env = {**os.environ, "JUICER_DATA": str(data), "JUICER_CACHE": str(shared_cache),
           "JUICER_LEAD_TOKEN": token}
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", *flags],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the app did not start: " + (tmp_path / "server.log").read_text()[-2000:])
    yield url, data
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture
def server(tmp_path, demo_project, shared_cache):
    yield from serve_app(tmp_path, shared_cache, LEAD, "--browser.gatherUsageStats", "false",
                         "--server.fileWatcherType", "none")


def settle(page) -> None:
    """Let charts and images finish drawing before a screenshot."""
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
    page.wait_for_timeout(2500)


def expected_state(keylog: list[dict]) -> dict:
    """{image id: class name, or None for a skip} that the keys should leave, read only from what
    was on screen at each key press (undo takes back the last answer and brings its image back)."""
    answered: list[tuple[int, str | None]] = []
    for entry in keylog:
        key, image = entry["key"], entry["image"]
        if key in ("u", "ArrowLeft"):
            if answered:
                back, _ = answered.pop()
                assert entry["after"] == str(back), f"undo did not bring image {back} back: {entry}"
            continue
        if image in (None, ""):
            continue                                   # no image on screen: the key is dropped
        if key == "Enter":
            if not entry["suggestion"]:
                continue
            answered.append((int(image), entry["suggestion"]))
        elif key.isdigit():
            answered.append((int(image), CLASSES[(int(key) - 1) % 10]))
        elif key == "s":
            answered.append((int(image), None))
        else:
            continue
        assert entry["after"] != image, f"the display did not move on after {entry}"
    state = {}
    for image, cls in answered:
        state[image] = cls
    return state


def stored_state(data) -> dict:
    """{image id: class name or None} of the lead's answers in the database: labels in force
    given by them, and pending drafts (a skip is a draft with no class, or a freed image)."""
    from loop.project import Project

    project = Project.open("demo", data)
    names = {c["id"]: c["name"] for c in project.class_rows}
    state = {}
    for event in project.store.label_events(project.id, annotator="lead"):
        state[event["image_id"]] = names.get(event["class_id"])
    for draft in project.store.drafts(project.id, "lead"):
        state[draft["image_id"]] = names.get(draft["class_id"])
    skipped = {r["image_id"] for r in project.store.query(
        "SELECT image_id FROM shown WHERE annotator = 'lead' AND skipped = 1")}
    for image in skipped:
        state.setdefault(image, None)
    return state


def test_fast_keys_answer_the_image_on_screen_in_the_real_app(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, data = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_init_script(CAPTURE)
        page = context.new_page()
        page.goto(url + f"/?token={LEAD}", timeout=180_000)
        page.wait_for_function("() => window.__lwRoot() && window.__lwRoot().dataset.imageId !== ''",
                               timeout=180_000)
        assert "token=" not in page.url                      # taken out of the address at once
        page.screenshot(path=str(tmp_path / "label.png"), full_page=True)
        page.locator("h1").first.click()

        rng = random.Random(3)
        keys = rng.choices(["Enter", "1", "3", "8", "s", "u"], weights=[70, 5, 5, 5, 8, 7], k=45)
        started = time.perf_counter()
        for key in keys:
            page.keyboard.press(key)
            page.wait_for_timeout(rng.uniform(10, 150))
        typing = time.perf_counter() - started
        page.wait_for_function("() => window.__lwRoot().dataset.outbox === '0'", timeout=120_000)
        page.wait_for_function("() => window.__keylog.every(e => e.after !== null)", timeout=10_000)
        keylog = page.evaluate("() => window.__keylog")
        page.screenshot(path=str(tmp_path / "label-after.png"), full_page=True)

        expected = expected_state(keylog)
        stored = stored_state(data)
        assert stored == expected, "an answer differs from what was on screen when its key was pressed"
        misapplied = sum(stored.get(i) != c for i, c in expected.items())
        moves = [e["paint_ms"] for e in keylog if e["after"] and e["after"] != e["image"]]
        print(f"\nreal app: {len(keys)} keys in {typing:.1f} s, {len(expected)} answers stored, "
              f"{misapplied} misapplied; key-to-next-image p50 {percentile(moves, 0.5):.0f} ms, "
              f"p95 {percentile(moves, 0.95):.0f} ms; screenshots in {tmp_path}")

        # After a reload the list of last answers comes from the store, and undo goes on there.
        page.reload()
        page.wait_for_function("() => window.__lwRoot() && window.__lwRoot().dataset.imageId !== ''",
                               timeout=60_000)
        page.locator("h1").first.click()
        newest = page.evaluate("() => window.__lwRoot().querySelector('.lw-history-button')"
                               ".dataset.imageId")
        page.keyboard.press("u")
        page.wait_for_function("() => window.__lwRoot().dataset.outbox === '0'", timeout=60_000)
        assert page.evaluate("() => window.__lwRoot().dataset.imageId") == newest   # back

        # An answer restored into the list after the reload can be changed by a click and a key.
        restored = page.evaluate("() => [...window.__lwRoot().querySelectorAll("
                                 "'.lw-history-button')].map(b => b.dataset.imageId)")
        assert restored and newest not in restored
        for target, key in ((int(restored[0]), "7"), (int(restored[-1]), "8")):
            page.evaluate(f"() => window.__lwRoot().querySelector("
                          f"\".lw-history-button[data-image-id='{target}']\").click()")
            page.wait_for_function(f"() => window.__lwRoot().dataset.editing === '{target}'",
                                   timeout=10_000)
            assert page.evaluate("() => window.__lwRoot().dataset.imageId") == str(target)
            page.keyboard.press(key)
            page.wait_for_function("() => window.__lwRoot().dataset.outbox === '0'",
                                   timeout=60_000)
            assert stored_state(data).get(target) == CLASSES[int(key) - 1], (target, key)
        assert page.evaluate("() => window.__lwRoot().dataset.imageId") == newest   # queue again

        # Grid mode with keys: an arrow moves, Space marks wrong, Enter confirms the rest; the
        # grid's images are held on a short lease while shown.
        page.get_by_text("Grid", exact=True).click()
        page.locator(".lg-cell").first.wait_for(timeout=60_000)
        shown = [int(i) for i in page.locator(".lg-cell").evaluate_all(
            "cells => cells.map(c => c.dataset.imageId)")]
        page.keyboard.press("ArrowRight")
        page.keyboard.press(" ")
        grid = lambda: page.locator(".lg-root").evaluate("r => ({...r.dataset})")
        assert grid()["wrong"] == str(shown[1]) and grid()["focus"] == str(shown[1])
        from loop.project import Project
        from loop.session import GRID_LEASE_SECONDS
        project = Project.open("demo", data)
        leases = [x for x in project.store.leases(project.id, "lead") if x["origin"] == "grid"]
        assert sorted(x["image_id"] for x in leases) == sorted(shown)
        assert all(x["expires_at"] - time.time() <= GRID_LEASE_SECONDS + 1 for x in leases)
        page.keyboard.press("Enter")
        deadline = time.time() + 60
        while time.time() < deadline and not [
                e for e in project.store.label_events(project.id) if e["origin"] == "grid"]:
            time.sleep(0.2)
        confirmed = {e["image_id"] for e in project.store.label_events(project.id)
                     if e["origin"] == "grid"}
        assert confirmed == set(shown) - {shown[1]}
        page.screenshot(path=str(tmp_path / "label-grid.png"), full_page=True)

        # A batch of 10 was submitted on its own; the head retrains in the background and the
        # lead pages show it.
        page.wait_for_function("() => document.cookie.includes('juicer_token=')", timeout=30_000)
        page.goto(url + "/curve")          # a new page load: signed in again from the cookie
        page.get_by_text("hold-out accuracy with").wait_for(timeout=120_000)
        settle(page)
        page.screenshot(path=str(tmp_path / "curve.png"), full_page=True)
        for path, text in (("/rules", "Risk–coverage"), ("/team", "Conflicts"),
                           ("/project", "New project from a folder")):
            page.goto(url + path)
            page.get_by_text(text).first.wait_for(timeout=60_000)
            settle(page)
            page.screenshot(path=str(tmp_path / f"{path.strip('/')}.png"), full_page=True)

        # An annotator's browser: the Label and Review pages; the lead pages are not there for them.
        from loop.people import create_token
        from loop.store import Store
        ana = create_token(Store(data / "juicer.db"), "ana", "annotator")
        other = browser.new_context()
        page = other.new_page()
        page.goto(url + f"/?token={ana}", timeout=120_000)
        try:
            page.get_by_text("Signed in as").wait_for(timeout=60_000)
        finally:
            page.screenshot(path=str(tmp_path / "annotator.png"), full_page=True)
        assert page.get_by_text("Curve").count() == 0 and page.get_by_text("Team").count() == 0
        page.wait_for_function("() => document.cookie.includes('juicer_token=')", timeout=30_000)
        page.goto(url + "/team")           # typed into the address: not theirs (a new session,
        # signed in again from the cookie)
        page.get_by_text("Label: demo").wait_for(timeout=60_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(tmp_path / "annotator-team.png"), full_page=True)
        assert page.get_by_text("Conflicts").count() == 0
        page.keyboard.press("Escape")                           # close "Page not found"
        page.get_by_role("button", name="Sign out").click()    # and the cookie goes too
        page.wait_for_function("() => !document.cookie.includes('juicer_token=')", timeout=30_000)
        page.goto(url)
        page.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
        browser.close()
