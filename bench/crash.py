"""Crash safety: a worker labels and retrains in a loop, and is killed with SIGKILL at a random
moment, round after round; after each kill a fresh trainer starts as a restarted app would, and
the store is checked.

    python bench/crash.py [--rounds 20] [--dataset demo:60] [--json]

The worker submits a batch, writes the confirmed image ids to its log (flushed and synced only
after `submit` returned, so the log never claims more than the store confirmed), then retrains and
publishes synchronously, so most of its time is spent inside submit and retrain: the kill lands
there. Figures: confirmed labels lost, versions without weights, versions without evaluation and
stray weights files after the restart, and where the kills landed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

PHASES = {0: "other", 1: "answering", 2: "submit", 3: "retrain"}


def worker(root: str, cache: str, name: str, log_path: str, phase, ready, seed: int) -> None:
    from loop.project import Paths, Project
    from loop.session import LabelingSession
    from loop.store import Store

    paths = Paths(Path(root), cache_dir=Path(cache))
    project = Project(Store(paths.database), name, paths)
    session = LabelingSession(project, f"w{seed}", batch_size=1000)   # submitted by hand below
    rng = np.random.default_rng(seed)
    project.current_head()       # import Keras and load the head before the clock starts
    session.window(5)
    ready.set()
    with open(log_path, "a") as log:
        while True:
            phase.value = 1
            for _ in range(4):                      # batches of 20 answers
                for item in session.window(5):
                    truth = project.store.image(project.id, item.image_id)["known_class_id"]
                    session.answer(item.image_id, project.class_names[project.class_index[truth]])
            phase.value = 2
            result = session.submit()
            phase.value = 0
            log.write(json.dumps(result["labeled"]) + "\n")
            log.flush()
            os.fsync(log.fileno())
            phase.value = 3
            project.retrain(force=bool(rng.random() < 0.3))
            phase.value = 0


def run(rounds: int, dataset: str, data_dir: Path, work: Path | None = None, log=print) -> dict:
    from loop.project import Paths, Project
    from loop.store import Store
    from loop.trainer import Trainer

    sys.path.insert(0, str(REPO / "bench"))
    from stress import make_project

    work = Path(work or tempfile.mkdtemp(prefix="juicer-crash-"))
    root = work / "data"
    project = make_project(root, dataset, data_dir, name="crash")
    cache = Paths(data_dir).cache
    ctx = mp.get_context("spawn")
    rng = np.random.default_rng(0)
    landed = {name: 0 for name in PHASES.values()}
    lost_total = 0
    problems = []
    log_path = work / "confirmed.jsonl"
    for k in range(rounds):
        phase, ready = ctx.Value("i", 0), ctx.Event()
        process = ctx.Process(target=worker, args=(str(root), str(cache), project.name, str(log_path),
                                                   phase, ready, k))
        process.start()
        ready.wait(120)
        # Aim each kill at a phase in turn (answering, submit, retrain), at a random moment in it.
        aim = (1, 2, 3)[k % 3]
        deadline = time.time() + 30
        while phase.value != aim and time.time() < deadline:
            time.sleep(0.0005)
        time.sleep(float(rng.uniform(0, {1: 0.2, 2: 0.003, 3: 0.03}[aim])))
        landed[PHASES[phase.value]] += 1
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        # A restart: a fresh process's view, and its trainer's first cycle mends what was left.
        restarted = Project(Store(Paths(root).database), project.name, Paths(root, cache_dir=cache))
        Trainer(restarted, start=False).cycle()
        confirmed = {i for line in log_path.read_text().splitlines() for i in json.loads(line)} \
            if log_path.exists() else set()
        labels = restarted.store.current_labels(restarted.id)
        lost = len(confirmed - set(labels))
        lost_total += lost
        versions = restarted.store.model_versions(restarted.id)
        no_weights = sum(not Path(v["weights_path"]).exists() for v in versions)
        no_eval = len(restarted.store.versions_without_evaluation(restarted.id))
        heads = restarted.paths.heads(restarted.name)
        known = {Path(v["weights_path"]).name for v in versions}
        stray = [p.name for p in heads.iterdir() if p.name not in known] if heads.exists() else []
        latest = restarted.store.latest_model_version(restarted.id)
        behind = latest["last_event_id"] < restarted.store.last_event_id(restarted.id, ("auto",))
        if lost or no_weights or no_eval or stray or behind:
            problems.append({"round": k, "lost": lost, "no_weights": no_weights, "no_eval": no_eval,
                             "stray": stray, "behind": behind})
        log(f"round {k + 1:>3}: killed during {PHASES[phase.value]:<9} confirmed {len(confirmed):>5} "
            f"lost {lost}  versions {len(versions)}  without weights {no_weights}  without "
            f"evaluation {no_eval}  stray files {len(stray)}")
    return {"rounds": rounds, "killed_during": landed, "confirmed_labels": len(confirmed),
            "confirmed_lost": lost_total, "rounds_with_problems": len(problems),
            "problems": problems[:10]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--dataset", default="demo:60")
    parser.add_argument("--data", default=str(REPO / "data"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args.rounds, args.dataset, Path(args.data))
    print(f"\n{figures['rounds']} rounds; kills landed during: "
          + ", ".join(f"{k} {v}" for k, v in figures["killed_during"].items()))
    print(f"confirmed labels {figures['confirmed_labels']}, lost {figures['confirmed_lost']}; rounds "
          f"where a restart left a version without weights or evaluation, a stray file, or labels "
          f"untrained: {figures['rounds_with_problems']}")
    if args.json:
        print(json.dumps(figures))
    return 1 if figures["confirmed_lost"] or figures["rounds_with_problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
