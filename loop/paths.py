"""Keep every path a browser names inside the folders it may use: names are checked before anything
touches disk, folders to import must lie under the configured import roots, and every path written
is resolved and checked to lie inside its destination.

Someone with a shell on the server (the command line) is trusted with any path; a browser is not.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from models.images import IMAGE_SUFFIXES

# Not portable to Windows, and markup-like where a name is shown.
FORBIDDEN_CHARACTERS = '<>:"|?*'
# Control and format characters (NUL, newlines, right-to-left overrides, zero-width joiners),
# lone surrogates, and the Unicode line and paragraph separators.
INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
_PROJECT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class UnsafePathError(ValueError):
    """A path that would lead outside the folder it belongs in; the message says which and why."""


class UnsafeNameError(UnsafePathError):
    """A name that cannot be one folder or file name; the message names it and says what to do."""


def check_name(name: str, what: str = "name", max_length: int = 100) -> str:
    """`name` itself when it is safe as one folder or file name, else UnsafeNameError.

    For class names, uploaded file names, export folder names and annotator names: no path
    separators, no `.`/`..` or hidden names, no control or format characters, none of `<>:"|?*`,
    no surrounding whitespace, at most `max_length` characters.

    >>> check_name("Zebra crossing", "class name")
    'Zebra crossing'
    >>> check_name("../../victim", "class name")
    Traceback (most recent call last):
    ...
    loop.paths.UnsafeNameError: class name '../../victim' contains '/'; use one name without '/' or '\\'
    >>> check_name("cat\\u202egnp.exe")
    Traceback (most recent call last):
    ...
    loop.paths.UnsafeNameError: name 'cat\\u202egnp.exe' contains the invisible character U+202E; type the name again without it
    """
    if not isinstance(name, str):
        raise UnsafeNameError(f"{what} {name!r:.120} is not text; give a name")
    problem = _name_problem(name, max_length)
    if problem:
        raise UnsafeNameError(f"{what} {_shown(name)} {problem}")
    return name


def _shown(name: str) -> str:
    """`name` as repr shows it (escapes made visible), cut short when very long."""
    return repr(name) if len(name) <= 120 else repr(name[:100]) + "..."


def _name_problem(name: str, max_length: int) -> str | None:
    if not name.strip():
        return "is empty; give a name"
    for char in name:
        if unicodedata.category(char) in INVISIBLE_CATEGORIES:
            return (f"contains the invisible character U+{ord(char):04X}; type the name again "
                    "without it")
    if name != name.strip():
        return "starts or ends with a space; remove it"
    if len(name) > max_length:
        return f"is {len(name)} characters long; use at most {max_length}"
    for separator in "/\\":
        if separator in name:
            return f"contains {separator!r}; use one name without '/' or '\\'"
    if name in (".", ".."):
        return "is not a name; give a name"
    if name.startswith("."):
        return "starts with '.' (a hidden name); start it with a letter or digit"
    bad = sorted(set(name) & set(FORBIDDEN_CHARACTERS))
    if bad:
        return f"contains {' '.join(bad)}; use none of {FORBIDDEN_CHARACTERS}"
    return None


def check_project_name(name: str) -> str:
    """`name` when it is a valid project name (letters, digits, `-`, `_`; 1 to 64 characters, at
    least one letter or digit), else UnsafeNameError. The same rule as `Store.create_project`,
    checked before anything touches disk (a project name also names folders).

    >>> check_project_name("birds-2024")
    'birds-2024'
    >>> check_project_name("../../etc")
    Traceback (most recent call last):
    ...
    loop.paths.UnsafeNameError: project name '../../etc' must be 1 to 64 letters, digits, '-' or '_'
    """
    if (not isinstance(name, str) or not _PROJECT_NAME.fullmatch(name)
            or not name.replace("-", "").replace("_", "")):
        raise UnsafeNameError(f"project name {_shown(str(name))} must be 1 to 64 letters, digits, '-' or '_'")
    return name


# -- folders a browser may import from ----------------------------------------------------------

def default_import_roots(data_root: Path) -> list[Path]:
    """`<data root>/imports` and the bundled datasets folder `<data root>/datasets`, resolved."""
    return [(Path(data_root) / "imports").resolve(), (Path(data_root) / "datasets").resolve()]


def import_roots(data_root: Path, store) -> list[Path]:
    """The folders a browser may import from: the defaults (imports/ created if missing) and the
    roots a lead added with `python -m loop roots add PATH`, each resolved, imports/ first."""
    (Path(data_root) / "imports").mkdir(parents=True, exist_ok=True)
    roots = default_import_roots(data_root) + [Path(p).resolve() for p in store.import_roots()]
    return list(dict.fromkeys(roots))


def resolve_import_folder(folder: str, roots: Sequence[Path]) -> Path:
    """The real folder a browser asked to import: a relative path is taken under the first root,
    `~` is not expanded, links are followed, and the result must lie inside one of `roots`.

    Whether a folder exists is said only for folders inside a root, so the answer tells nothing
    about the rest of the server.

    >>> import tempfile; root = Path(tempfile.mkdtemp()).resolve(); (root / "birds").mkdir()
    >>> resolve_import_folder("birds", [root]) == root / "birds"
    True
    >>> resolve_import_folder("../../etc", [root])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    loop.paths.UnsafePathError: folder '../../etc' is outside the folders this server imports from (...); a lead can add one with `python -m loop roots add PATH`
    """
    if not roots:
        raise UnsafePathError("this server imports from no folder; a lead can add one with "
                              "`python -m loop roots add PATH`")
    if not isinstance(folder, str) or not folder.strip():
        raise ValueError("give a folder to import")
    if any(unicodedata.category(c) in INVISIBLE_CATEGORIES for c in folder):
        raise UnsafeNameError(f"folder {_shown(folder)} contains an invisible character; "
                              "type it again")
    real_roots = [Path(r).resolve() for r in roots]
    path = Path(folder)
    try:
        resolved = (path if path.is_absolute() else real_roots[0] / path).resolve()
    except (RuntimeError, OSError):   # a symlink loop (RuntimeError before Python 3.13)
        raise UnsafePathError(f"folder {_shown(folder)} is a symbolic link that loops") from None
    if not any(resolved.is_relative_to(r) for r in real_roots):
        raise UnsafePathError(
            f"folder {_shown(folder)} is outside the folders this server imports from "
            f"({', '.join(map(str, real_roots))}); a lead can add one with "
            "`python -m loop roots add PATH`")
    if not resolved.exists():
        raise ValueError(f"folder {_shown(folder)} does not exist (looked for '{resolved}')")
    if not resolved.is_dir():
        raise ValueError(f"{_shown(folder)} is a file; give the folder that holds the images")
    return resolved


# -- paths written under a destination ----------------------------------------------------------

def safe_child(base: Path, *parts: str, what: str = "path part") -> Path:
    """`base`/parts..., resolved, after checking each part is one safe name (`check_name`, up to
    255 characters), that no existing component below `base` is a link, and that the result lies
    inside `base`. Raises UnsafeNameError / UnsafePathError.

    >>> import tempfile; base = Path(tempfile.mkdtemp()).resolve()
    >>> safe_child(base, "Cat", "1.png") == base / "Cat" / "1.png"
    True
    >>> safe_child(base, "..", "victim")
    Traceback (most recent call last):
    ...
    loop.paths.UnsafeNameError: path part '..' is not a name; give a name
    """
    real_base = Path(base).resolve()
    current = real_base
    for part in parts:
        check_name(part, what, max_length=255)
        current = current / part
        if current.is_symlink():
            raise UnsafePathError(f"'{current}' is a symbolic link; refused (it could lead outside "
                                  f"'{real_base}')")
    resolved = current.resolve()
    if not resolved.is_relative_to(real_base):
        raise UnsafePathError(f"'{current}' leads outside '{real_base}'; refused")
    return resolved


def save_uploads(upload_root: Path, project_name: str, files: Sequence[tuple[str, bytes]],
                 max_bytes: int | None = None) -> Path:
    """Write uploaded images to a new folder `upload_root`/`project_name` and return it.

    Everything is checked before anything is written: the project name, and every file's name,
    image suffix and size. A browser sends a bare file name, so a name with a separator or `..`
    is hostile: the whole upload is refused (naming each bad file), never silently stripped.
    The folder must not exist yet (uploads are never merged into another's folder); files are
    created exclusively, and a repeated name gets a numeric prefix (`1-cat.png`). If writing
    fails part-way, what was written is removed again.

    >>> import tempfile; root = Path(tempfile.mkdtemp())
    >>> folder = save_uploads(root, "shelf", [("a.png", b"x"), ("a.png", b"y")])
    >>> sorted(p.name for p in folder.iterdir())
    ['1-a.png', 'a.png']
    >>> save_uploads(root, "other", [("../../a.png", b"x")])
    Traceback (most recent call last):
    ...
    loop.paths.UnsafeNameError: upload refused, nothing was written: uploaded file name '../../a.png' contains '/'; use one name without '/' or '\\'
    """
    check_project_name(project_name)
    if not files:
        raise ValueError("no files were uploaded; choose some images")
    problems, unsafe = [], False
    for name, data in files:
        try:
            check_name(name, "uploaded file name", max_length=255)
        except UnsafeNameError as exc:
            problems.append(str(exc))
            unsafe = True
            continue
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"uploaded file {_shown(name)} is not an image file "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        elif max_bytes is not None and len(data) > max_bytes:
            problems.append(f"uploaded file {_shown(name)} is {len(data) / 2**20:.1f} MB; the "
                            f"limit is {max_bytes / 2**20:.1f} MB")
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise (UnsafeNameError if unsafe else ValueError)(
            f"upload refused, nothing was written: {'; '.join(problems[:5])}{more}")

    upload_root = Path(upload_root)
    upload_root.mkdir(parents=True, exist_ok=True)
    folder = safe_child(upload_root, project_name, what="project name")
    try:
        folder.mkdir()
    except FileExistsError:
        raise ValueError(f"uploads for project '{project_name}' exist already ('{folder}'); "
                         "choose another project name") from None
    written: list[Path] = []
    try:
        taken: set[str] = set()
        for name, data in files:
            unique, n = name, 0
            while unique.casefold() in taken:    # casefold: 'A.png' and 'a.png' clash on some disks
                n += 1
                unique = f"{n}-{name}"
            taken.add(unique.casefold())
            path = safe_child(folder, unique, what="uploaded file name")
            with open(path, "xb") as out:
                written.append(path)
                out.write(data)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        try:
            os.rmdir(folder)
        except OSError:
            pass
        raise
    return folder


def export_folder(data_root: Path, name: str) -> Path:
    """The browser's export destination: `<data root>/exports/<name>`, `name` one folder name.

    >>> import tempfile; root = Path(tempfile.mkdtemp()).resolve()
    >>> export_folder(root, "birds-v1") == root / "exports" / "birds-v1"
    True
    >>> export_folder(root, "/etc")
    Traceback (most recent call last):
    ...
    loop.paths.UnsafeNameError: export folder name '/etc' contains '/'; use one name without '/' or '\\'
    """
    check_name(name, "export folder name")
    exports = Path(data_root) / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    return safe_child(exports, name, what="export folder name")
