"""Export a project's current labels: CSV, JSON, or a copy of the images as an ImageFolder tree
(one sub-folder per class), the format most training code reads. An export never overwrites a
file and never writes outside its destination, whatever names the database holds."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import unicodedata
from collections.abc import Callable
from pathlib import Path

from loop.paths import (FORBIDDEN_CHARACTERS, INVISIBLE_CATEGORIES, UnsafeNameError,
                        UnsafePathError, check_name, safe_child)
from loop.project import Project

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


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
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in label_rows(project))
    return buffer.getvalue()


def _cell(value):
    """A text cell a spreadsheet shows as text: one that starts like a formula gets a leading `'`.

    >>> _cell("=1+2"), _cell("@SUM(A1)"), _cell("cat"), _cell(1.5)
    ("'=1+2", "'@SUM(A1)", 'cat', 1.5)
    """
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def to_json(project: Project) -> str:
    return json.dumps({"project": project.name, "classes": project.class_names,
                       "labels": label_rows(project)}, indent=1)


def to_image_folder(project: Project, destination: str | Path,
                    on_skip: Callable[[str, str], None] | None = None) -> int:
    """Copy every labeled image to `destination`/<class>/<file> and return how many were copied.

    `destination` must be new or an empty real folder (not a link). Everything is checked before
    anything is written: each class name must be one safe folder name (an old database may hold
    names the check refuses: the export is refused, naming them). File names are flattened
    (`sub/a.png` -> `sub__a.png`) and made safe. A source file that leads outside the project
    folder, or is gone, is skipped and reported to `on_skip(path, reason)`. Every file is
    created exclusively under a checked path, so nothing is overwritten and nothing is written
    outside `destination`; only the bytes are copied (no permissions, owners or links).
    """
    destination = Path(destination)
    rows = label_rows(project)
    bad = []
    for name in sorted({row["label"] for row in rows}):
        try:
            check_name(name, "class name")
        except UnsafeNameError as exc:
            bad.append(str(exc))
    if bad:
        raise UnsafeNameError(f"export refused, nothing was written: {'; '.join(bad)}. Rename "
                              "the class (the name predates the check), or export CSV or JSON")
    if destination.is_symlink():
        raise UnsafePathError(f"'{destination}' is a symbolic link; give a new or empty real "
                              "folder")
    if destination.exists():
        if not destination.is_dir():
            raise ValueError(f"'{destination}' is a file; give a new or empty folder")
        if any(destination.iterdir()):
            raise ValueError(f"'{destination}' is not empty; choose a new or empty folder")

    root = project.root.resolve()
    plan: list[tuple[Path, str, str]] = []
    taken: set[tuple[str, str]] = set()
    for row in rows:
        source = (project.root / row["path"]).resolve()
        if not source.is_relative_to(root):
            _skip(on_skip, row["path"], f"'{row['path']}' leads outside the project folder "
                                        f"'{root}'; not copied")
            continue
        if not source.is_file():
            _skip(on_skip, row["path"], f"'{row['path']}' is no longer in '{root}'; not copied")
            continue
        base = _file_name(row["path"])
        name, n = base, 0
        while (row["label"], name.casefold()) in taken:    # casefold: clashes on some disks
            n += 1
            name = f"{n}-{base}"
        taken.add((row["label"], name.casefold()))
        plan.append((source, row["label"], name))

    destination.mkdir(parents=True, exist_ok=True)
    base_folder = destination.resolve()
    made: set[str] = set()
    count = 0
    for source, label, name in plan:
        if label not in made:
            safe_child(base_folder, label, what="class name").mkdir()   # new: the folder was empty
            made.add(label)
        target = safe_child(base_folder, label, name, what="file name")
        try:
            reader = os.fdopen(os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb")
        except OSError as exc:
            relative = source.relative_to(root).as_posix()
            _skip(on_skip, relative, f"'{relative}' cannot be read ({exc.strerror}); not copied")
            continue
        with reader, open(target, "xb") as writer:   # "x": fails rather than overwrite or follow
            shutil.copyfileobj(reader, writer)
        count += 1
    return count


def _skip(on_skip, path: str, reason: str) -> None:
    if on_skip is not None:
        on_skip(path, reason)


def _file_name(path: str) -> str:
    """One safe file name for an image's path in the project: folders flattened with `__`, any
    character `check_name` refuses replaced by `_`, a leading dot guarded, and kept short.

    >>> _file_name("sub/a.png"), _file_name(".hidden/b:c.png")
    ('sub__a.png', '_.hidden__b_c.png')
    """
    name = "".join("_" if c == "\\" or c in FORBIDDEN_CHARACTERS
                   or unicodedata.category(c) in INVISIBLE_CATEGORIES else c
                   for c in path.replace("/", "__")).strip() or "image"
    if name.startswith("."):
        name = "_" + name
    stem, suffix = os.path.splitext(name)
    while len(name.encode()) > 200:          # file systems allow 255 bytes; room for a prefix
        stem = stem[:-1]
        name = stem + suffix
    check_name(name, "file name", max_length=255)
    return name
