"""A fake server for the labeling widget's browser tests: 60 drawn images, a window of 8 leased
to one annotator, every answer the browser sends appended (once per uid) to a JSON-lines file
and acknowledged on the same rerun.

    LABEL_HARNESS_LOG=/tmp/answers.jsonl LABEL_HARNESS_SLEEP_MS=300 \
        streamlit run tests/label_widget_harness.py

LABEL_HARNESS_SLEEP_MS adds a sleep to every rerun (a busy 2-core server); `?nostore=1` makes
the server drop every answer unstored and unacknowledged (a server the answers never reached);
`?refuse=1` refuses every answer naming the last class, with a reason; `?callback=1` takes the
answers in the widget's on_change callback instead of reading them before drawing it;
`?classes=12` offers two more classes (past ten, the widget shows a type-to-filter box).
"""

from __future__ import annotations

import base64
import colorsys
import fcntl
import io
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

N_IMAGES = 60
WINDOW = 8
BATCH = 10
STORAGE_KEY = "juicer-harness"
# Ten classes for keys 1-9 and 0; one is long (must wrap), one carries markup (must show as text).
CLASSES = ["red", "orange", "yellow", "green", "teal", "blue", "violet",
           "a very long class name that has to wrap onto a second line instead of being cut off",
           "<i>pink</i> & <b>co</b>", "grey"]
EXTRA_CLASSES = ["cyan", "magenta"]


def item_mark(image_id: int) -> str | None:
    return "holdout" if image_id % 10 == 3 else "audit" if image_id % 17 == 8 else None


def has_suggestion(image_id: int) -> bool:
    return item_mark(image_id) is None and image_id % 13 != 5


def suggestion(image_id: int, model_version: int) -> tuple[str, float] | None:
    """The fake model's guess; it changes with every retrain, so the browser must update the
    suggestions it holds (but not the one on screen)."""
    if not has_suggestion(image_id):
        return None
    index = (image_id + 3 * model_version) % len(CLASSES)
    return CLASSES[index], 0.5 + ((image_id * 7 + model_version) % 50) / 100


def image_png(image_id: int) -> bytes:
    from PIL import Image, ImageDraw

    # Mostly tiny images (drawn pixelated when enlarged); every 9th is a larger photo-sized one.
    size = (320, 240) if image_id % 9 == 4 else (40, 40)
    rgb = colorsys.hsv_to_rgb((image_id * 0.61803) % 1.0, 0.55 + 0.4 * (image_id % 2), 0.9)
    image = Image.new("RGB", size, tuple(int(255 * c) for c in rgb))
    draw = ImageDraw.Draw(image)
    draw.text((3, 3), str(image_id), fill=(0, 0, 0))
    draw.rectangle([0, 0, size[0] - 1, size[1] - 1], outline=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def store(path: Path, answers: list[dict]) -> tuple[list[dict], list[str]]:
    """Append the answers whose uid is new; return the whole log and the uids now stored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)   # two tabs' reruns may store at once
        f.seek(0)
        rows = [json.loads(line) for line in f.read().splitlines() if line.strip()]
        known = {r["uid"] for r in rows}
        for answer in answers:
            if answer.get("uid") in known:
                continue
            row = {**answer, "received_at": time.time()}
            f.write(json.dumps(row) + "\n")
            rows.append(row)
            known.add(answer["uid"])
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)
    return rows, [a["uid"] for a in answers if a.get("uid") in known]


def replay(rows: list[dict]) -> tuple[set[int], int, int]:
    """Images answered or skipped (and not undone), answers counted, batches submitted."""
    done: set[int] = set()
    answered = submitted = 0
    for row in rows:
        if row["action"] in ("answer", "skip", "flag"):
            done.add(row["image_id"])
            answered += row["action"] == "answer"
        elif row["action"] == "undo":
            done.discard(row["image_id"])
            answered -= 1
        elif row["action"] == "submit":
            submitted += 1
    return done, answered, submitted


def receive(log: Path, answers: list[dict], *, nostore: bool, refuse_last_class: bool
            ) -> tuple[list[dict], list[str], dict[str, str]]:
    """Store what the browser sent: the whole log, the uids to acknowledge, the refused ones."""
    refused = {}
    if refuse_last_class:
        refused = {a["uid"]: f"{CLASSES[-1]!r} is retired" for a in answers
                   if a.get("class") == CLASSES[-1]}
        answers = [a for a in answers if a["uid"] not in refused]
    if nostore:
        return read_log(log), [], {}
    rows, acked = store(log, answers)
    return rows, acked, refused


def main() -> None:
    import streamlit as st

    from pages.label_widget import label_widget, pending_answers

    log = Path(os.environ.get("LABEL_HARNESS_LOG", "label_widget_answers.jsonl"))
    sleep_s = float(os.environ.get("LABEL_HARNESS_SLEEP_MS", "0")) / 1000
    options = {"nostore": st.query_params.get("nostore") == "1",
               "refuse_last_class": st.query_params.get("refuse") == "1"}
    # Two ways to take answers: read the widget's state before drawing it (default), or in its
    # on_change callback, which runs before the script (`?callback=1`, as the Label page does).
    use_callback = st.query_params.get("callback") == "1"

    def on_change() -> None:
        _, st.session_state.acked, st.session_state.refused = receive(
            log, pending_answers("label"), **options)

    st.title("Label widget harness")
    st.text_input("notes", key="notes")

    if use_callback:
        rows = read_log(log)
        acked, refused = st.session_state.get("acked", []), st.session_state.get("refused", {})
    else:
        rows, acked, refused = receive(log, pending_answers("label"), **options)
    time.sleep(sleep_s)

    done, answered, submitted = replay(rows)
    model_version = 1 + max(answered, 0) // BATCH
    window = [i for i in range(N_IMAGES) if i not in done][:WINDOW]
    if "pngs" not in st.session_state:
        st.session_state.pngs = {i: base64.b64encode(image_png(i)).decode()
                                 for i in range(N_IMAGES)}
    items = []
    for i in window:
        guess = suggestion(i, model_version)
        items.append({"image_id": i, "src": "data:image/png;base64," + st.session_state.pngs[i],
                      "name": f"{CLASSES[i % len(CLASSES)][:12]}/{i:04d}.png",
                      "suggestion": guess[0] if guess else None,
                      "confidence": guess[1] if guess else None,
                      "model_version": model_version, "mark": item_mark(i)})
    message = "nothing is stored (nostore=1)" if options["nostore"] else f"{len(rows)} rows stored"
    status = {"pending": len(window), "batch": BATCH, "model_version": model_version,
              "submitted": submitted, "message": message}
    classes = CLASSES + (EXTRA_CLASSES if st.query_params.get("classes") == "12" else [])
    label_widget(items, classes, key="label", acked=acked, refused=refused, status=status,
                 storage_key=STORAGE_KEY, on_change=on_change if use_callback else None)


if __name__ == "__main__":   # `streamlit run` runs a script as __main__; tests import the helpers
    main()
