"""A real browser: Debian's chromium, driven by Playwright, labels a batch on the demo project with
the keyboard alone, waits for the background retrain, and checks that the labeled count and the
curve moved. Prints the server time per answer and the answers per minute it reached; saves a
screenshot of each page under the test's temporary folder."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO, SHARED_DATA

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium (.ci/run does)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, demo_project, shared_cache):
    data = tmp_path / "data"
    data.mkdir()
    (data / "datasets").symlink_to(SHARED_DATA / "datasets")
    port = free_port()
    env = {**os.environ, "JUICER_DATA": str(data), "JUICER_CACHE": str(shared_cache)}
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
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
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


def current_image(page) -> str:
    return page.get_attribute("#current-image", "data-image", timeout=120_000)


def sidebar_metric(page, label: str) -> str:
    block = page.locator('[data-testid="stMetric"]', has_text=label)
    return block.locator('[data-testid="stMetricValue"]').inner_text(timeout=60_000)


def settle(page) -> None:
    """Let charts and images finish drawing before a screenshot."""
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
    page.wait_for_timeout(2500)


def test_label_a_batch_by_keyboard(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server + "/?annotator=ana", timeout=180_000)
        first = current_image(page)
        labeled_before = int(sidebar_metric(page, "labeled (training)"))
        versions_before = int(sidebar_metric(page, "model versions"))
        page.screenshot(path=str(tmp_path / "label.png"), full_page=True)

        timings = []
        image = first
        page.locator("h1").first.click()         # focus the page, not an input
        # Three batches with keys alone: mostly Enter (confirm), some number keys (another class),
        # one skip and one undo, as an annotator would.
        keys = (["Enter"] * 8 + ["3", "7"]) * 3 + ["s", "u", "Enter"]
        started = time.perf_counter()
        for key in keys:
            t = time.perf_counter()
            page.keyboard.press(key)             # every key moves on (undo: back to the skipped one)
            page.wait_for_function(
                "old => document.querySelector('#current-image')?.dataset.image !== old",
                arg=image, timeout=60_000)
            image = current_image(page)
            timings.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        server_ms = [float(m) for m in re.findall(r"server time for the last answer: (\d+) ms",
                                                   page.content())]
        page.screenshot(path=str(tmp_path / "label-after.png"), full_page=True)

        # Each batch was submitted by itself at 10 answers; the head retrains in the background.
        deadline = time.time() + 120
        while int(sidebar_metric(page, "model versions")) <= versions_before and time.time() < deadline:
            time.sleep(1)
            page.reload()
        assert int(sidebar_metric(page, "model versions")) >= versions_before + 1
        # 30 answers submitted in three batches of 10; the 31st (after skip and undo) is a draft.
        deadline = time.time() + 60
        while int(sidebar_metric(page, "labeled (training)")) < labeled_before + 30 and time.time() < deadline:
            time.sleep(1)
            page.reload()
        assert int(sidebar_metric(page, "labeled (training)")) == labeled_before + 30

        page.goto(server + "/curve?annotator=ana")
        page.get_by_text(re.compile(r"with 40 labels")).wait_for(timeout=120_000)
        settle(page)
        page.screenshot(path=str(tmp_path / "curve.png"), full_page=True)
        page.goto(server + "/rules?annotator=ana")
        page.get_by_text("Risk–coverage").wait_for(timeout=60_000)
        settle(page)
        page.screenshot(path=str(tmp_path / "rules.png"), full_page=True)
        page.goto(server + "/project?annotator=ana")
        page.get_by_text("New project from a folder").wait_for(timeout=60_000)
        settle(page)
        page.screenshot(path=str(tmp_path / "project.png"), full_page=True)
        browser.close()

    per_minute = 60 * len(timings) / elapsed
    print(f"\nkeyboard labeling: {per_minute:.0f} answers/min in the browser, "
          f"median {1000 * sorted(timings)[len(timings) // 2]:.0f} ms key-to-next-image, "
          f"server time per answer median {sorted(server_ms)[len(server_ms) // 2] if server_ms else 'n/a'} ms; "
          f"screenshots in {tmp_path}")
    assert per_minute > 0
