"""Paths a browser names stay inside their roots: name checks, import folders, uploads, export
folder names, class sub-folders, and the `roots` command."""

import doctest
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loop.paths
from loop.__main__ import main
from loop.paths import (UnsafeNameError, UnsafePathError, check_name, check_project_name,
                        export_folder, import_roots, resolve_import_folder, safe_child, save_uploads)
from loop.project import Paths, ProjectError, create_project, scan_folder
from loop.store import Store, StoreError

HOSTILE_NAMES = ["", "   ", " lead", "trail ", "x" * 101, "a/b", "a\\b", ".", "..", ".hidden",
                 "../../victim", "/etc", "nul\x00byte", "new\nline", "tab\tname", "rtl\u202eoverride",
                 "zero\u200bwidth", "line\u2028sep", "<b>bold</b>", "a:b", 'quo"te', "pi|pe", "why?",
                 "star*"]


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` (links not followed) with the bytes of each file; a database's
    own files are listed without their bytes (SQLite checkpoints its log whenever it likes)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            database = ".db" in path.name
            found[str(path.relative_to(folder))] = (
                path.read_bytes() if path.is_file() and not path.is_symlink() and not database else None)
    return found


def test_docstring_examples():
    result = doctest.testmod(loop.paths)
    assert result.failed == 0 and result.attempted > 0


# -- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused_naming_them(name):
    with pytest.raises(UnsafeNameError) as caught:
        check_name(name, "class name")
    message = str(caught.value)
    assert message.startswith("class name ") and repr(name)[:100] in message
    assert "\n" not in message and "\u202e" not in message   # shown safely, escapes visible


@pytest.mark.parametrize("name", ["Cat", "zebra crossing", "Ünïcode", "a.b", "a-b_c", "x" * 100,
                                  "😀", "1", "a..b", "v1.0"])
def test_plain_names_pass(name):
    assert check_name(name) == name


def test_non_text_is_refused():
    with pytest.raises(UnsafeNameError, match="is not text"):
        check_name(None)


@pytest.mark.parametrize("name", ["birds", "a-b_1", "x" * 64, "A9"])
def test_project_names_that_pass(name):
    assert check_project_name(name) == name


@pytest.mark.parametrize("name", ["", "-", "__", "a b", "../x", "/etc", "x" * 65, "ünï", "a.b",
                                  "a\n", "a/b", None])
def test_project_names_that_are_refused(name):
    with pytest.raises(UnsafeNameError, match="project name"):
        check_project_name(name)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=64))
def test_project_name_rule_is_the_stores(name):
    """Checked before disk is touched, with exactly the rule the database enforces."""
    store = Store(":memory:")
    try:
        store.create_project(name, "/tmp", "{}", ["a", "b"])
        store_accepts = True
    except StoreError as exc:
        assert "must be letters" in str(exc)
        store_accepts = False
    try:
        check_project_name(name)
        we_accept = True
    except UnsafeNameError:
        we_accept = False
    assert we_accept == store_accepts


# -- import folders ---------------------------------------------------------------------------

@pytest.fixture
def roots(tmp_path):
    data = tmp_path / "data"
    (data / "datasets" / "demo").mkdir(parents=True)
    return import_roots(data, Store(data / "juicer.db")), tmp_path


def test_import_roots_defaults_and_added(tmp_path):
    data = tmp_path / "data"
    store = Store(Paths(data).database)
    extra = tmp_path / "photos"
    extra.mkdir()
    store.add_import_root(str(extra))
    found = import_roots(data, store)
    assert found == [(data / "imports").resolve(), (data / "datasets").resolve(), extra.resolve()]
    assert (data / "imports").is_dir()          # created for the browser's first import


def test_relative_folders_are_taken_under_imports(roots):
    found, _ = roots
    (found[0] / "birds").mkdir()
    assert resolve_import_folder("birds", found) == found[0] / "birds"
    assert resolve_import_folder(str(found[1] / "demo"), found) == found[1] / "demo"


@pytest.mark.parametrize("folder", ["../..", "../../../../elsewhere", "birds/../../..", "/etc",
                                    "/root", "/", "/tmp"])
def test_traversal_and_absolute_folders_are_refused(roots, folder):
    found, _ = roots
    with pytest.raises(UnsafePathError, match="outside the folders this server imports from.*"
                                               "python -m loop roots add PATH"):
        resolve_import_folder(folder, found)


def test_a_sibling_with_the_roots_name_as_prefix_is_outside(roots):
    found, _ = roots
    evil = Path(str(found[0]) + "-evil")
    evil.mkdir()
    with pytest.raises(UnsafePathError, match="outside"):
        resolve_import_folder(str(evil), found)


def test_outside_answers_tell_nothing_about_existence(roots):
    found, tmp_path = roots
    (tmp_path / "exists").mkdir()
    messages = []
    for name in ("exists", "missing"):
        with pytest.raises(UnsafePathError) as caught:
            resolve_import_folder(str(tmp_path / name), found)
        messages.append(str(caught.value).replace(name, "X"))
    assert messages[0] == messages[1]
    with pytest.raises(ValueError, match="does not exist"):   # inside a root it may say so
        resolve_import_folder("missing", found)


def test_tilde_is_not_expanded(roots):
    found, _ = roots
    with pytest.raises(ValueError, match="does not exist") as caught:
        resolve_import_folder("~", found)
    assert str(found[0] / "~") in str(caught.value)


@pytest.mark.parametrize("target", ["/etc", "outside"])
def test_links_out_of_a_root_are_refused(roots, target):
    found, tmp_path = roots
    destination = Path(target) if target.startswith("/") else tmp_path / target
    destination.mkdir(exist_ok=True)
    (found[0] / "link").symlink_to(destination)
    with pytest.raises(UnsafePathError, match="outside"):
        resolve_import_folder("link", found)
    with pytest.raises(UnsafePathError, match="outside"):
        resolve_import_folder(str(found[0] / "link"), found)


def test_links_within_the_roots_are_followed(roots):
    found, _ = roots
    (found[0] / "link").symlink_to(found[1] / "demo")
    assert resolve_import_folder("link", found) == found[1] / "demo"


def test_files_and_control_characters_are_refused(roots):
    found, _ = roots
    (found[0] / "a.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        resolve_import_folder("a.png", found)
    with pytest.raises(UnsafeNameError, match="invisible"):
        resolve_import_folder("birds\x00/../../etc", found)
    with pytest.raises(UnsafePathError, match="imports from no folder"):
        resolve_import_folder("birds", [])


# -- paths under a destination ----------------------------------------------------------------

def test_safe_child(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    assert safe_child(base, "a", "b.png") == base.resolve() / "a" / "b.png"
    for parts in (("..",), ("a", ".."), ("../x",), ("/etc",), ("a/b",), ("",)):
        with pytest.raises(UnsafeNameError):
            safe_child(base, *parts)
    (tmp_path / "outside").mkdir()
    (base / "link").symlink_to(tmp_path / "outside")
    (base / "inner").mkdir()
    (base / "inner-link").symlink_to(base / "inner")     # even a link that stays inside
    for parts in (("link",), ("link", "x.png"), ("inner-link", "x.png")):
        with pytest.raises(UnsafePathError, match="symbolic link"):
            safe_child(base, *parts)


@pytest.mark.parametrize("name", ["../x", "../../../../elsewhere", "/etc", "a/b", "..", ".", "",
                                  "a\\b", "x\ny"])
def test_export_folder_names_are_one_name(tmp_path, name):
    with pytest.raises(UnsafeNameError, match="export folder name"):
        export_folder(tmp_path, name)


def test_export_folder(tmp_path):
    assert export_folder(tmp_path, "birds v1") == (tmp_path / "exports" / "birds v1").resolve()
    assert not (tmp_path / "exports" / "birds v1").exists()   # to_image_folder creates it


# -- uploads ------------------------------------------------------------------------------------

def test_uploads_are_written_exclusively_with_unique_names(tmp_path):
    folder = save_uploads(tmp_path / "uploads", "shelf",
                          [("a.png", b"1"), ("a.png", b"2"), ("A.PNG", b"3"), ("1-a.png", b"4"),
                           ("b.jpg", b"5")])
    assert folder == (tmp_path / "uploads" / "shelf").resolve()
    assert tree(folder) == {"a.png": b"1", "1-a.png": b"2", "2-A.PNG": b"3", "1-1-a.png": b"4",
                            "b.jpg": b"5"}


@pytest.mark.parametrize("name", ["../../x.png", "../../../../elsewhere/x.png", "/tmp/abs.png",
                                  "sub/x.png", "a\\b.png", "..", ".png", ".hidden.png", "x.png\n",
                                  "x\x00.png", "<img>.png", "a" * 252 + ".png"])
def test_hostile_upload_names_write_nothing(tmp_path, name):
    before = tree(tmp_path)
    with pytest.raises(UnsafeNameError, match="nothing was written") as caught:
        save_uploads(tmp_path / "uploads", "shelf", [("good.png", b"1"), (name, b"2")])
    assert repr(name)[:100] in str(caught.value)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("project", ["../../../../elsewhere", "/tmp/abs", "a/b", "..", "", "a b"])
def test_hostile_project_names_write_nothing(tmp_path, project):
    before = tree(tmp_path)
    with pytest.raises(UnsafeNameError, match="project name"):
        save_uploads(tmp_path / "uploads", project, [("good.png", b"1")])
    assert tree(tmp_path) == before


def test_uploads_that_are_not_images_or_too_big_write_nothing(tmp_path):
    before = tree(tmp_path)
    with pytest.raises(ValueError, match="'notes.txt' is not an image file.*'big.png' is 0.0 MB"):
        save_uploads(tmp_path / "uploads", "shelf",
                     [("notes.txt", b"1"), ("big.png", b"x" * 11), ("ok.png", b"1")], max_bytes=10)
    with pytest.raises(ValueError, match="no files"):
        save_uploads(tmp_path / "uploads", "shelf", [])
    assert tree(tmp_path) == before


def test_uploads_never_merge_into_an_existing_folder(tmp_path):
    existing = tmp_path / "uploads" / "shelf"
    existing.mkdir(parents=True)
    (existing / "a.png").write_bytes(b"theirs")
    with pytest.raises(ValueError, match="exist already"):
        save_uploads(tmp_path / "uploads", "shelf", [("a.png", b"mine"), ("b.png", b"mine")])
    assert tree(existing) == {"a.png": b"theirs"}
    (tmp_path / "outside").mkdir()
    (tmp_path / "uploads" / "linked").symlink_to(tmp_path / "outside")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        save_uploads(tmp_path / "uploads", "linked", [("a.png", b"mine")])
    assert tree(tmp_path / "outside") == {}


# -- class names in folders and class lists ----------------------------------------------------

@pytest.mark.parametrize("hostile", ["a\\b", "new\nline", "<script>", "a:b", " lead", "rtl\u202egnp",
                                     "x" * 101, "why?"])
def test_hostile_class_sub_folders_are_refused_naming_them(tmp_path, hostile):
    for name in ("Cat", "Cow", hostile):
        (tmp_path / "animals" / name).mkdir(parents=True)
        (tmp_path / "animals" / name / "1.png").write_bytes(b"x")
    with pytest.raises(ProjectError, match="rename that sub-folder") as caught:
        scan_folder(tmp_path / "animals", labeled=True)
    assert repr(hostile) in str(caught.value)


def test_hidden_sub_folders_are_not_classes(tmp_path):
    for name in ("Cat", "Cow", "..victim", ".git"):
        (tmp_path / "animals" / name).mkdir(parents=True)
        (tmp_path / "animals" / name / "1.png").write_bytes(b"x")
    found, classes, _ = scan_folder(tmp_path / "animals", labeled=True)
    assert classes == ["Cat", "Cow"] and {p for p, _ in found} == {"Cat/1.png", "Cow/1.png"}


@pytest.mark.parametrize("hostile", ["../../../victim", "/etc", "a/b", "..", "", "x\ny"])
def test_hostile_class_lists_are_refused_before_anything(tmp_path, hostile):
    paths = Paths(tmp_path / "data")
    store = Store(paths.database)
    with pytest.raises(ProjectError, match="class name"):
        create_project(store, "shelf", tmp_path / "missing", paths, class_names=["ok", hostile])
    assert store.projects() == []


# -- the roots command ----------------------------------------------------------------------------

def test_roots_command(tmp_path, capsys):
    data = tmp_path / "data"
    extra = tmp_path / "photos"
    (extra / "birds").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(extra)
    assert main(["--data", str(data), "roots", "add", str(tmp_path / "alias")]) == 0
    assert main(["--data", str(data), "roots", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert f"{extra.resolve()}" in listed                         # stored resolved
    assert f"{(data / 'imports').resolve()}  (default)" in listed
    found = import_roots(data, Store(Paths(data).database))
    assert resolve_import_folder(str(extra / "birds"), found) == (extra / "birds").resolve()

    assert main(["--data", str(data), "roots", "remove", str(extra)]) == 0
    assert Store(Paths(data).database).import_roots() == []
    with pytest.raises(UnsafePathError):
        resolve_import_folder(str(extra / "birds"), import_roots(data, Store(Paths(data).database)))


@pytest.mark.parametrize("argv, message", [
    (["add", "{tmp}/missing"], "does not exist"),
    (["add", "{tmp}/file.txt"], "is a file"),
    (["remove", "{tmp}/never-added"], "is not an added import root"),
    (["remove", "{tmp}/data/imports"], "default import root"),
])
def test_roots_command_errors(tmp_path, capsys, argv, message):
    (tmp_path / "file.txt").write_text("x")
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(["--data", str(tmp_path / "data"), "roots", *argv]) == 2
    assert message in capsys.readouterr().err
    assert Store(Paths(tmp_path / "data").database).import_roots() == []


def test_symlink_loops_and_undecodable_names_are_refused_not_raised(tmp_path, demo_project, shared_cache):
    """Found by bench/hostile.py: a looping link stopped the whole import with a RuntimeError, and
    a file name that is not UTF-8 left a project with no images behind."""
    import shutil

    from loop.paths import resolve_import_folder
    from loop.project import create_project
    from loop.store import Store

    root = tmp_path / "animals"
    for name in ("Cat", "Cow"):
        (root / name).mkdir(parents=True)
        for source in sorted((demo_project.root / name).glob("*.png"))[:3]:
            shutil.copy(source, root / name / source.name)
    (root / "Cat" / "loop.png").symlink_to("loop.png")
    (root / "Cat" / "a.png").symlink_to("b.png")
    (root / "Cat" / "b.png").symlink_to("a.png")
    shutil.copy(next((root / "Cow").glob("*.png")), os.fsencode(root / "Cow") + b"/\xff\xfe.png")
    paths = Paths(tmp_path / "data", cache_dir=shared_cache)
    project = create_project(Store(paths.database), "hostile", root, paths)
    reasons = dict(project.status()["skipped"])
    assert "loops" in reasons["Cat/loop.png"] and "loops" in reasons["Cat/a.png"]
    assert any("not valid UTF-8" in r for r in reasons.values())
    assert project.status()["images"] == 6 and len(reasons) == 4       # the good ones still came in
    imports = tmp_path / "data" / "imports"
    imports.mkdir(parents=True, exist_ok=True)
    (imports / "loop-link").symlink_to("loop-link")
    with pytest.raises(UnsafePathError, match="loops"):
        resolve_import_folder("loop-link", [imports])
