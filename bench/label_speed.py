"""How fast the Label page moves on, as a person sees it: a real chromium (Playwright) against the
real app on a fresh data root (demo project, the real background trainer retraining after every
batch of 10), beside a bare Streamlit page with the same layout where every key is a full rerun
(the "before"), in the same run.

Key-to-next-image is measured in the page: a capturing keydown listener notes performance.now()
and then checks on every animation frame until a different image is on screen and decoded; the
time of that frame is the figure. Three bots: one pressing the next key as soon as the next image
is visible, a typist pausing 10-150 ms, and one pausing 1 s per image (a person); a "wait" is a key
whose next image was not visible by the second animation frame. `key_to_next_ms` is the typist's;
the full-speed bot's is reported beside it. Every stored answer is then checked in the database
against the image that was on screen at its key (`misapplied`, must be 0).

    python3 bench/label_speed.py            # about 2 minutes on 2 cores
    python3 bench/label_speed.py --json     # last line: one JSON object

The same file is the baseline page when Streamlit runs it (`LABEL_SPEED_BASELINE` names the
demo folder).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
LEAD = "label-speed-bench-lead-token-0123456789"
CLASSES = ["Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra"]
KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"]

# Runs before the page's own scripts. The image "on screen" is the widget's (its data-image-id,
# with its <img> decoded) or, on the baseline page, the st.image's src.
MEASURE = """
window.__bench = [];
window.__screen = () => {
  for (const host of document.querySelectorAll('[data-testid="stBidiComponentIsolated"]')) {
    const root = host.shadowRoot && host.shadowRoot.querySelector('.lw-root');
    if (!root) continue;
    const img = root.querySelector('.lw-stage img');
    return {id: root.dataset.imageId || '', suggestion: root.dataset.suggestion || '',
            visible: !!img && img.complete && img.naturalWidth > 0};
  }
  const img = document.querySelector('[data-testid="stImage"] img, [data-testid="stFullScreenFrame"] img');
  return {id: img ? img.getAttribute('src') : '', suggestion: '',
          visible: !!img && img.complete && img.naturalWidth > 0};
};
window.addEventListener('keydown', (e) => {
  const t0 = performance.now();
  const before = window.__screen();
  const entry = {key: e.key, image: before.id, suggestion: before.suggestion, after: null,
                 ms: null, frames: 0};
  window.__bench.push(entry);
  const tick = () => {
    entry.frames += 1;
    const now = window.__screen();
    if (now.id && now.id !== before.id && now.visible) {
      entry.ms = performance.now() - t0;
      entry.after = now.id;
    } else if (performance.now() - t0 > 60000) {
      entry.ms = -1;
    } else {
      requestAnimationFrame(tick);
    }
  };
  requestAnimationFrame(tick);
}, true);
window.__settled = () => new Promise((resolve) => {
  const check = () => {
    const last = window.__bench[window.__bench.length - 1];
    if (!last || last.ms !== null) resolve(window.__screen()); else requestAnimationFrame(check);
  };
  check();
});
"""


# ------------------------------------------------------------------------------ the baseline page

def baseline_page(folder: Path) -> None:
    """The old page's shape: one st.image and a button per class, each key a full rerun."""
    import streamlit as st

    from models.images import thumbnail

    st.set_page_config(page_title="Baseline", layout="wide")
    files = sorted(folder.glob("*/*.png"))
    random.Random(0).shuffle(files)
    position = st.session_state.setdefault("position", 0)

    def advance(name: str) -> None:
        st.session_state.setdefault("answers", []).append((st.session_state.position, name))
        st.session_state.position += 1

    st.title("Label: baseline")
    st.radio("Mode", ["One by one", "Grid"], horizontal=True, label_visibility="collapsed")
    st.caption("Keys: Enter confirms the suggestion · 1-9, 0 pick a class")
    path = files[position % len(files)]
    st.image(thumbnail(path, 360), width=360)
    st.markdown(f"suggestion: **{CLASSES[position % 10]}** · `{path.name}`")
    columns = st.columns(len(CLASSES))
    for k, name in enumerate(CLASSES):
        columns[k].button(name, key=f"class-{k}", shortcut=KEYS[k], on_click=advance, args=(name,))
    st.button("Confirm (Enter)", shortcut="Enter", on_click=advance, args=(CLASSES[position % 10],))
    st.caption(f"answers: {len(st.session_state.get('answers', []))}")


# ------------------------------------------------------------------------------ servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_streamlit(script: Path, env: dict, log: Path, timeout_s: float = 240):
    port = free_port()
    with open(log, "w") as out:   # the server keeps its own copy of the file
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return process, url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"{script.name} did not start: {log.read_text()[-2000:]}")


# ------------------------------------------------------------------------------ bots

def press_and_wait(page, key: str) -> dict:
    page.keyboard.press(key)
    return page.evaluate("() => window.__settled()")


def run_bot(page, n: int, pause_s: tuple[float, float], rng: random.Random) -> dict:
    """Answer `n` images: Enter where a suggestion shows, else a class key, each key a pause
    drawn from `pause_s` (seconds, low and high) after the image is visible. Returns the keys'
    log entries and the elapsed seconds."""
    first = len(page.evaluate("() => window.__bench"))
    screen = page.evaluate("() => window.__screen()")
    started = time.perf_counter()
    for _ in range(n):
        if pause_s[1]:
            time.sleep(rng.uniform(*pause_s))
        key = "Enter" if screen.get("suggestion") else rng.choice(KEYS)
        screen = press_and_wait(page, key)
    elapsed = time.perf_counter() - started
    return {"log": page.evaluate("() => window.__bench")[first:], "seconds": elapsed}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(run: dict) -> dict:
    moves = [e["ms"] for e in run["log"] if e["ms"] is not None and e["ms"] >= 0]
    return {"p50": percentile(moves, 0.5), "p95": percentile(moves, 0.95),
            "answers": len(moves), "answers_per_min": 60 * len(moves) / max(run["seconds"], 1e-9),
            "waits": sum(1 for e in run["log"] if e["frames"] > 2 or e["ms"] in (None, -1))}


# ------------------------------------------------------------------------------ checking the store

def misapplied(data: Path, logs: list[dict]) -> tuple[int, int]:
    """(answers stored for another image or class than was on screen at their key, answers
    stored). Every key here answers: Enter the suggestion shown, a digit its class."""
    from loop.project import Project

    expected: dict[int, str] = {}
    for e in logs:
        if e["image"] in (None, ""):
            continue
        cls = e["suggestion"] if e["key"] == "Enter" else CLASSES[KEYS.index(e["key"])]
        if cls:
            expected[int(e["image"])] = cls
    project = Project.open("demo", data)
    names = {c["id"]: c["name"] for c in project.class_rows}
    stored: dict[int, str | None] = {}
    for event in project.store.label_events(project.id, annotator="lead"):
        stored[event["image_id"]] = names.get(event["class_id"])
    for draft in project.store.drafts(project.id, "lead"):
        stored[draft["image_id"]] = names.get(draft["class_id"])
    wrong = sum(1 for image, cls in stored.items() if expected.get(image) != cls)
    return wrong, len(stored)


# ------------------------------------------------------------------------------ main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", type=int, default=60,
                        help="answers by the bot pressing as soon as the next image shows")
    parser.add_argument("--typist", type=int, default=80,
                        help="answers by a fast typist (10-150 ms after each image shows)")
    parser.add_argument("--paced", type=int, default=25, help="answers by the 1 s-per-image bot")
    parser.add_argument("--baseline", type=int, default=25, help="answers on the bare page")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium: apt-get install chromium")
    shared = REPO / "data"
    work = Path(tempfile.mkdtemp(prefix="label-speed-"))
    data = work / "data"
    data.mkdir()
    (data / "datasets").symlink_to(shared / "datasets")
    demo_folder = next(p for p in sorted((shared / "datasets").glob("demo-*")) if p.is_dir())
    env = {"JUICER_DATA": str(data), "JUICER_CACHE": str(shared / "cache" / "embeddings"),
           "JUICER_LEAD_TOKEN": LEAD, "TF_CPP_MIN_LOG_LEVEL": "3"}
    app, app_url = start_streamlit(REPO / "app.py", env, work / "app.log")
    base, base_url = start_streamlit(Path(__file__).resolve(),
                                     {"LABEL_SPEED_BASELINE": str(demo_folder)}, work / "base.log")
    rng = random.Random(args.seed)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.add_init_script(MEASURE)

            page = context.new_page()
            page.goto(app_url + f"/?token={LEAD}", timeout=240_000)
            page.wait_for_function("() => { const s = window.__screen(); return s.id && s.visible; }",
                                   timeout=240_000)
            page.locator("h1").first.click()
            versions_before = _versions(data)
            fast = run_bot(page, args.fast, (0.0, 0.0), rng)
            typist = run_bot(page, args.typist, (0.010, 0.150), rng)
            paced = run_bot(page, args.paced, (1.0, 1.0), rng)
            page.wait_for_timeout(3000)           # the last answers reach the server
            wrong, stored = misapplied(data, fast["log"] + typist["log"] + paced["log"])
            versions = _versions(data) - versions_before

            bare = context.new_page()
            bare.goto(base_url, timeout=120_000)
            bare.wait_for_function("() => { const s = window.__screen(); return s.id && s.visible; }",
                                   timeout=120_000)
            bare.locator("h1").first.click()
            baseline = run_bot(bare, args.baseline, (0.0, 0.0), rng)
            browser.close()
    finally:
        for process in (app, base):
            process.terminate()
            process.wait(timeout=30)
    shutil.rmtree(work, ignore_errors=True)

    f, t, pa, b = summary(fast), summary(typist), summary(paced), summary(baseline)
    rows = [("Label page, bot at full speed", f), ("Label page, typist 10-150 ms", t),
            ("Label page, 1 s per image", pa), ("bare page (baseline), full speed", b)]
    print(f"{'key to next image':<34} {'keys':>5} {'p50 ms':>8} {'p95 ms':>8} {'answers/min':>12} "
          f"{'waits':>6}")
    for name, s in rows:
        print(f"{name:<34} {s['answers']:>5} {s['p50'] or 0:>8.1f} {s['p95'] or 0:>8.1f} "
              f"{s['answers_per_min']:>12.0f} {s['waits']:>6}")
    print(f"stored answers: {stored}, misapplied: {wrong}; model versions published meanwhile: "
          f"{versions} (the trainer retrains after every batch of 10)")
    if args.json:
        ms = lambda s: {"p50": _round(s["p50"]), "p95": _round(s["p95"])}
        print(json.dumps({
            "key_to_next_ms": ms(t),
            "baseline_key_to_next_ms": ms(b),
            "answers_per_min": round(f["answers_per_min"], 1),
            "key_to_next_ms_full_speed": ms(f),
            "key_to_next_ms_paced": ms(pa),
            "answers_per_min_typist": round(t["answers_per_min"], 1),
            "answers_per_min_paced": round(pa["answers_per_min"], 1),
            "waits_full_speed": f["waits"], "waits_typist": t["waits"], "waits_paced": pa["waits"],
            "baseline_answers_per_min": round(b["answers_per_min"], 1),
            "misapplied": wrong, "stored": stored, "model_versions": versions}))
    return 0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _versions(data: Path) -> int:
    from loop.project import Project

    project = Project.open("demo", data)
    return len(project.store.model_versions(project.id))


if __name__ == "__main__":
    if os.environ.get("LABEL_SPEED_BASELINE"):      # run by Streamlit: the bare page
        baseline_page(Path(os.environ["LABEL_SPEED_BASELINE"]))
    else:
        sys.exit(main())
