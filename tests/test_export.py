"""Exports: CSV cells that cannot run as formulas, and an ImageFolder copy that never overwrites
and never writes outside its destination, whatever names the database holds."""

import doctest
import json
from pathlib import Path

import pytest

import loop.export
from loop.__main__ import main
from loop.export import to_csv, to_image_folder, to_json
from loop.paths import UnsafeNameError, UnsafePathError
from loop.project import Paths, Project
from loop.settings import Settings
from loop.store import Store
from tests.test_paths import tree


def make_project(data: Path, root: Path, files: dict[str, bytes], labels: dict[str, str],
                 classes=("Cat", "Cow"), name="animals", annotator="ana") -> Project:
    """A project straight in the store (no embedding): `files` under `root`, `labels` path ->
    class. The store takes any class name, as an old database may hold one."""
    for path, data_bytes in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data_bytes)
    store = Store(Paths(data).database)
    pid = store.create_project(name, str(root), Settings().to_json(), list(classes))
    store.add_images(pid, [{"path": p, "split": "pool", "hash": f"h{i}"}
                           for i, p in enumerate(labels)])
    ids = {i["path"]: i["id"] for i in store.images(pid)}
    store.add_labels(pid, [(ids[p], c) for p, c in labels.items()], annotator=annotator,
                     source="human")
    return Project(store, name, Paths(data))


def test_docstring_examples():
    result = doctest.testmod(loop.export)
    assert result.failed == 0 and result.attempted > 0


def test_image_folder_copies_bytes_under_safe_names(tmp_path):
    files = {"Cat/1.png": b"c1", "Cat/sub/2.png": b"c2", "Cat/sub__2.png": b"c3",
             "Cow/we:ird.png": b"w1", "Cow/x\\y.png": b"w2"}
    project = make_project(tmp_path / "data", tmp_path / "animals", files,
                           {p: p.split("/")[0] for p in files})
    out = tmp_path / "out" / "v1"
    assert to_image_folder(project, out) == 5
    assert tree(out) == {"Cat": None, "Cow": None, "Cat/Cat__1.png": b"c1",
                         "Cat/Cat__sub__2.png": b"c2", "Cat/1-Cat__sub__2.png": b"c3",
                         "Cow/Cow__we_ird.png": b"w1", "Cow/Cow__x_y.png": b"w2"}


@pytest.mark.parametrize("hostile", ["../../../victim", "../victim", "..", "a/../../victim",
                                     "{tmp}/victim"])
def test_a_hostile_class_name_writes_nothing_and_overwrites_nothing(tmp_path, hostile):
    hostile = hostile.format(tmp=tmp_path)
    victim = tmp_path / "victim" / "Cat__1.png"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    project = make_project(tmp_path / "data", tmp_path / "animals",
                           {"Cat/1.png": b"evil", "Cow/1.png": b"cow"},
                           {"Cat/1.png": hostile, "Cow/1.png": "Cow"}, classes=("Cow", hostile))
    before = tree(tmp_path)
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(UnsafeNameError, match="export refused, nothing was written") as caught:
        to_image_folder(project, out)
    assert repr(hostile) in str(caught.value)
    assert victim.read_bytes() == b"precious"
    assert tree(tmp_path) == before and not out.exists()


@pytest.mark.parametrize("setup, message", [
    ("non-empty", "is not empty"), ("file", "is a file"), ("link", "symbolic link")])
def test_destinations_that_are_not_new_or_empty_are_refused(tmp_path, setup, message):
    project = make_project(tmp_path / "data", tmp_path / "animals", {"Cat/1.png": b"c"},
                           {"Cat/1.png": "Cat"})
    out = tmp_path / "out"
    if setup == "non-empty":
        (out / "Cat").mkdir(parents=True)
        (out / "Cat" / "Cat__1.png").write_bytes(b"theirs")
    elif setup == "file":
        out.write_bytes(b"theirs")
    else:
        (tmp_path / "empty").mkdir()
        out.symlink_to(tmp_path / "empty")
    before = tree(tmp_path)
    with pytest.raises(ValueError, match=message):
        to_image_folder(project, out)
    assert tree(tmp_path) == before


def test_an_empty_real_folder_is_used(tmp_path):
    project = make_project(tmp_path / "data", tmp_path / "animals", {"Cat/1.png": b"c"},
                           {"Cat/1.png": "Cat"})
    (tmp_path / "out").mkdir()
    assert to_image_folder(project, tmp_path / "out") == 1


def test_sources_outside_the_project_folder_are_skipped(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    root = tmp_path / "animals"
    project = make_project(tmp_path / "data", root, {"Cat/1.png": b"c"},
                           {"Cat/1.png": "Cat", "Cat/link.png": "Cat", str(secret): "Cow",
                            "../secret.png": "Cow", "Cow/gone.png": "Cow"})
    (root / "Cat" / "link.png").symlink_to(secret)   # swapped in after the project was made
    skipped = []
    out = tmp_path / "out"
    assert to_image_folder(project, out, on_skip=lambda p, r: skipped.append((p, r))) == 1
    assert tree(out) == {"Cat": None, "Cat/Cat__1.png": b"c"}
    reasons = dict(skipped)
    assert set(reasons) == {"Cat/link.png", str(secret), "../secret.png", "Cow/gone.png"}
    assert "outside the project folder" in reasons["Cat/link.png"]
    assert "no longer in" in reasons["Cow/gone.png"]


def test_csv_cells_cannot_run_as_formulas(tmp_path):
    project = make_project(tmp_path / "data", tmp_path / "animals",
                           {"Cat/=1+2.png": b"c", "Cat/-x.png": b"d"},
                           {"Cat/=1+2.png": "=HYPERLINK(\"http://x\")", "Cat/-x.png": "Cat"},
                           classes=("Cat", "=HYPERLINK(\"http://x\")"), annotator="@ana")
    text = to_csv(project)
    assert "'=HYPERLINK" in text and "'@ana" in text
    for line in text.splitlines()[1:]:
        assert not any(cell.lstrip('"').startswith(("=", "+", "-", "@"))
                       for cell in line.split(","))
    labels = json.loads(to_json(project))["labels"]     # JSON keeps the values as they are
    assert {row["label"] for row in labels} == {"Cat", "=HYPERLINK(\"http://x\")"}


# -- the export command ---------------------------------------------------------------------------

@pytest.fixture
def cli_project(tmp_path):
    make_project(tmp_path / "data", tmp_path / "animals", {"Cat/1.png": b"c", "Cow/1.png": b"w"},
                 {"Cat/1.png": "Cat", "Cow/1.png": "Cow"})
    return ["--data", str(tmp_path / "data"), "export", "animals"]


def test_export_command_csv_and_json(tmp_path, capsys, cli_project):
    assert main([*cli_project, "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("path,split,label,annotator,source,labeled_at")
    out = tmp_path / "sub" / "labels.json"
    assert main([*cli_project, "--format", "json", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["project"] == "animals"
    assert main([*cli_project, "--format", "csv", "--out", str(out)]) == 2   # never overwrites
    assert "exists already" in capsys.readouterr().err
    assert json.loads(out.read_text())["project"] == "animals"


def test_export_command_image_folder(tmp_path, capsys, cli_project):
    out = tmp_path / "tree"
    assert main([*cli_project, "--format", "imagefolder", "--out", str(out)]) == 0
    assert "copied 2 images" in capsys.readouterr().out
    assert tree(out)["Cow/Cow__1.png"] == b"w"
    before = tree(tmp_path)
    assert main([*cli_project, "--format", "imagefolder", "--out", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main([*cli_project, "--format", "imagefolder"]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_export_command_refuses_a_hostile_class(tmp_path, capsys):
    victim = tmp_path / "victim" / "Cat__1.png"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    make_project(tmp_path / "data", tmp_path / "animals", {"Cat/1.png": b"evil"},
                 {"Cat/1.png": "../../victim"}, classes=("Cow", "../../victim"))
    before = tree(tmp_path)
    argv = ["--data", str(tmp_path / "data"), "export", "animals", "--format", "imagefolder",
            "--out", str(tmp_path / "x" / "out")]
    assert main(argv) == 2
    assert "'../../victim'" in capsys.readouterr().err
    assert victim.read_bytes() == b"precious" and tree(tmp_path) == before


def test_unsafe_path_error_is_a_value_error():
    assert issubclass(UnsafeNameError, UnsafePathError) and issubclass(UnsafePathError, ValueError)
