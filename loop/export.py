"""Export a project's current labels: CSV, JSON, or a copy of the images as an ImageFolder tree
(one sub-folder per class), the format most training code reads."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

from loop.project import Project


def label_rows(project: Project) -> list[dict]:
    """One row per labeled image: its path, split, class, and who labeled it, how and when."""
    latest: dict[int, dict] = {}
    for event in project.store.label_events(project.id):
        latest[event["image_id"]] = event
    names = {c["id"]: c["name"] for c in project.class_rows}
    images = {i["id"]: i for i in project.store.images(project.id)}
    return [{"path": images[i]["path"], "split": images[i]["split"], "label": names[e["class_id"]],
             "annotator": e["annotator"], "source": e["source"], "labeled_at": e["created_at"]}
            for i, e in sorted(latest.items()) if e["class_id"] is not None and i in images]


def to_csv(project: Project) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["path", "split", "label", "annotator", "source", "labeled_at"])
    writer.writeheader()
    writer.writerows(label_rows(project))
    return buffer.getvalue()


def to_json(project: Project) -> str:
    return json.dumps({"project": project.name, "classes": project.class_names,
                       "labels": label_rows(project)}, indent=1)


def to_image_folder(project: Project, destination: str | Path) -> int:
    """Copy every labeled image to `destination`/<class>/<file>; refuses a non-empty destination
    (nothing of the user's is overwritten). Returns the number of images copied."""
    destination = Path(destination).expanduser()
    if destination.exists() and any(destination.iterdir()):
        raise ValueError(f"'{destination}' is not empty; choose a new or empty folder")
    count = 0
    for row in label_rows(project):
        source = project.root / row["path"]
        target = destination / row["label"] / row["path"].replace("/", "__")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        count += 1
    return count
