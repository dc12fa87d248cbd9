"""A team at once on one database: N annotator processes, each with its own background trainer (as
every app server has), label through the real `LabelingSession` while retrains run; optionally
app servers with a browser bot each label through the real page too. Then the store and the
processes' logs are checked for what a team cannot live with.

    python bench/stress.py [--annotators 8] [--labels 1000] [--dataset demo:1000]
                           [--app-servers 2] [--json]

Figures: labels written, lost (answers a process saw accepted but the store lacks), answered twice
(images with answers from two people; overlap is off), images leased to two people at once,
versions out of order (last_event_id not strictly increasing, or a weights file whose version
number differs from its row), hold-out images trained on, p50/p95 of an answer and of fetching
the next images (ms, as the annotator's process saw them).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def make_project(root: Path, dataset: str, data_dir: Path, name: str = "team"):
    """A fresh project of a labeled dataset (its folder classes are the simulated truth)."""
    from loop.project import Paths, open_or_create_dataset_project
    from loop.settings import Settings

    paths = Paths(root, cache_dir=Paths(data_dir).cache)
    return open_or_create_dataset_project(dataset, paths, name=name, data_dir=data_dir,
                                          settings=Settings(batch_size=10, holdout_size=500))


def annotate(root: str, cache: str, name: str, person: str, n_labels: int, log_path: str,
             seed: int, noise: float = 0.05, deadline: float = 1e12) -> None:
    """One annotator's process: its own trainer (like an app server), answering the first image of
    its window from the folder class (wrong with probability `noise`), skipping 2% and undoing 1%,
    logging every call's outcome and timing as one JSON line."""
    from loop.project import Paths, Project
    from loop.session import LabelingSession
    from loop.store import Store, StoreError
    from loop.trainer import Trainer

    paths = Paths(Path(root), cache_dir=Path(cache))
    project = Project(Store(paths.database), name, paths)
    trainer = Trainer(project)
    session = LabelingSession(project, person, trainer)
    rng = np.random.default_rng(seed)
    seen: dict[int, float] = {}
    answered = 0
    with open(log_path, "a") as log:
        def write(**row):
            log.write(json.dumps({"person": person, "t": time.time(), **row}) + "\n")

        while answered < n_labels and time.time() < deadline:
            started = time.perf_counter()
            items = session.window()
            write(kind="fetch", ms=1000 * (time.perf_counter() - started), n=len(items))
            if not items:
                break
            for item in items:
                seen.setdefault(item.image_id, time.time())
            item = items[0]
            truth = project.class_names[project.class_index[project.store.image(
                project.id, item.image_id)["known_class_id"]]]
            roll = rng.random()
            started = time.perf_counter()
            try:
                if roll < 0.01 and answered:
                    undone = session.undo()
                    write(kind="undo", image=undone, ms=1000 * (time.perf_counter() - started))
                    continue
                choice = None if roll < 0.03 else (
                    truth if rng.random() >= noise else
                    project.class_names[int(rng.integers(len(project.class_names)))])
                outcome = session.answer(item.image_id, choice, uid=f"{person}-{answered}")
            except StoreError as exc:
                write(kind="refused", image=item.image_id, reason=str(exc))
                continue
            write(kind="answer", image=item.image_id, cls=choice, status=outcome.status,
                  submitted=outcome.submitted, seen=seen[item.image_id],
                  ms=1000 * (time.perf_counter() - started))
            answered += 1
        result = session.submit()
        write(kind="final", labeled=len(result["labeled"]), conflicts=len(result["conflicts"]))
        trainer.wait(timeout=120)
    trainer.close()


def check(root: Path, name: str, logs: list[Path]) -> dict:
    """Everything the issue counts, from the store and the logs."""
    from loop.project import Paths, Project
    from loop.store import Store

    project = Project(Store(Paths(root).database), name, Paths(root))
    store = project.store
    rows = [json.loads(line) for path in logs if path.exists() for line in path.read_text().splitlines()]
    answers = [r for r in rows if r["kind"] == "answer"]
    events = store.label_events(project.id)
    people = [e for e in events if e["source"] == "human" and e["origin"] != "undo"]
    conflicts = store.conflicts(project.id, status=None)
    # Lost: an answer stored as a draft (and not undone afterwards) that is neither an event nor a
    # conflict of that person now.
    undone = {(r["person"], r["image"]) for r in rows if r["kind"] == "undo" and r.get("image")}
    have = {(e["annotator"], e["image_id"]) for e in people} | {(c["annotator"], c["image_id"]) for c in conflicts}
    kept = [a for a in answers if a["status"] == "draft" and a["cls"] is not None
            and (a["person"], a["image"]) not in undone]
    lost = [a for a in kept if (a["person"], a["image"]) not in have]
    by_image: dict[int, set] = {}
    for person, image in have:
        by_image.setdefault(image, set()).add(person)
    twice = sum(len(p) > 1 for p in by_image.values())
    # Leased to two at once: the intervals from first seen in a window to the answer overlap.
    intervals: dict[int, list] = {}
    for a in answers:
        intervals.setdefault(a["image"], []).append((a["seen"], a["t"], a["person"]))
    overlapping = 0
    for spans in intervals.values():
        spans.sort()
        overlapping += any(b[0] < a[1] and a[2] != b[2] for a, b in zip(spans, spans[1:]))
    versions = store.model_versions(project.id)
    out_of_order = sum(b["last_event_id"] <= a["last_event_id"] for a, b in zip(versions, versions[1:]))
    misnamed = sum(int(re.match(r"v(\d+)-", Path(v["weights_path"]).name).group(1)) != v["version"]
                   for v in versions)
    missing_weights = sum(not Path(v["weights_path"]).exists() for v in versions)
    holdout = {i["id"] for i in store.images(project.id, split="holdout")}
    trained_holdout = sum(len(set(store.trained_ids(v["id"]).tolist()) & holdout) for v in versions)

    def pct(kind, q):
        values = [r["ms"] for r in rows if r["kind"] == kind]
        return round(float(np.percentile(values, q)), 1) if values else None

    return {"annotators": len({r["person"] for r in rows}), "answers": len(answers),
            "labels_written": len(people), "conflicts": len(conflicts), "lost": len(lost),
            "answered_twice": twice, "leased_to_two_at_once": overlapping,
            "versions": len(versions), "versions_out_of_order": out_of_order + misnamed,
            "versions_without_weights": missing_weights,
            "versions_without_evaluation": len(store.versions_without_evaluation(project.id)),
            "holdout_trained_on": trained_holdout,
            "answer_ms": {"p50": pct("answer", 50), "p95": pct("answer", 95)},
            "fetch_ms": {"p50": pct("fetch", 50), "p95": pct("fetch", 95)}}


def app_server(root: Path, cache: Path, port: int, log):
    import subprocess

    env = {**os.environ, "JUICER_DATA": str(root), "JUICER_CACHE": str(cache), "JUICER_PROJECT": "team",
           "JUICER_DATASET": str(root / "source"), "JUICER_LEAD_TOKEN": "stress-lead-token-0123456789"}
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats",
         "false", "--server.fileWatcherType", "none"], cwd=REPO, env=env, stdout=log, stderr=log)


def browser_bot(url: str, token: str, stop: str, out: str, seconds: float = 3600) -> None:
    """Press Enter on the page every 300 ms until the file `stop` exists (a person on each
    server, labeling for as long as the annotator processes do)."""
    import shutil

    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
    presses = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=flags)
        page = browser.new_page()
        page.goto(f"{url}/?token={token}&project=team", timeout=300_000)
        page.locator("[data-image-id]").first.wait_for(timeout=300_000)
        end = time.time() + seconds
        while time.time() < end and not Path(stop).exists():
            page.keyboard.press("Enter")
            presses += 1
            page.wait_for_timeout(300)
        page.wait_for_timeout(3000)
        browser.close()
    Path(out).write_text(json.dumps({"presses": presses}))


def run(annotators: int, labels: int, dataset: str, app_servers: int, data_dir: Path,
        work: Path | None = None, log=print) -> dict:
    from loop.people import create_token
    from loop.project import Paths
    from loop.store import Store

    work = Path(work or tempfile.mkdtemp(prefix="juicer-stress-"))
    root = work / "data"
    log(f"preparing {dataset} under {root} (embedding is cached after the first run)...")
    project = make_project(root, dataset, data_dir)
    cache = Paths(data_dir).cache
    store = Store(Paths(root).database)
    servers, bots, server_log = [], [], open(work / "servers.log", "w")
    if app_servers:
        import shutil
        import socket

        if shutil.which("chromium") is None:
            log("chromium is not installed: no app servers in this run")
            app_servers = 0
        (root / "source").symlink_to(project.root)
        for k in range(app_servers):
            token = create_token(store, f"browser{k}", "annotator")
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            servers.append((app_server(root, cache, port, server_log), f"http://127.0.0.1:{port}", token))
    ctx = mp.get_context("spawn")
    logs = [work / f"annotator{k}.jsonl" for k in range(annotators)]
    started = time.time()
    procs = [ctx.Process(target=annotate, args=(str(root), str(cache), project.name, f"ann{k}", labels,
                                                 str(logs[k]), k)) for k in range(annotators)]
    for p in procs:
        p.start()
    if servers:
        import urllib.request

        for process, url, token in servers:
            for _ in range(240):
                try:
                    if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    time.sleep(0.5)
        for k, (process, url, token) in enumerate(servers):
            bots.append(ctx.Process(target=browser_bot, args=(url, token, str(work / "stop"),
                                                              str(work / f"bot{k}.json"))))
            bots[-1].start()
    for p in procs:
        p.join()
    (work / "stop").touch()
    for p in bots:
        p.join()
    for process, _, _ in servers:
        process.terminate()
        process.wait(timeout=60)
    elapsed = time.time() - started
    figures = check(root, project.name, logs)
    browser = [e for e in store.label_events(project.id) if e["annotator"].startswith("browser")]
    figures.update(seconds=round(elapsed, 1), app_servers=app_servers,
                   browser_labels=len(browser),
                   exit_codes=[p.exitcode for p in procs + bots])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--labels", type=int, default=1000, help="answers per annotator process")
    parser.add_argument("--dataset", default="demo:1000")
    parser.add_argument("--app-servers", type=int, default=2)
    parser.add_argument("--data", default=str(REPO / "data"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args.annotators, args.labels, args.dataset, args.app_servers, Path(args.data))
    print(f"\n{figures['annotators']} annotator processes + {figures['app_servers']} app servers, "
          f"{figures['seconds']} s")
    for key in ("answers", "labels_written", "browser_labels", "conflicts", "lost", "answered_twice",
                "leased_to_two_at_once", "versions", "versions_out_of_order", "versions_without_weights",
                "versions_without_evaluation", "holdout_trained_on"):
        print(f"  {key.replace('_', ' '):<28} {figures[key]}")
    for key in ("answer_ms", "fetch_ms"):
        print(f"  {key.replace('_', ' '):<28} p50 {figures[key]['p50']}  p95 {figures[key]['p95']}")
    if args.json:
        print(json.dumps(figures))
    bad = any(figures[k] for k in ("lost", "answered_twice", "leased_to_two_at_once",
                                   "versions_out_of_order", "holdout_trained_on"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
