"""Bad input, tried through the real product code: crafted files in a folder to import, hostile
class, person, project and upload names, paths that lead outside their roots, and the command line;
each one should be refused with its reason, cleanly (a ValueError or PermissionError subclass with
a message that names the bad thing, not a traceback of another type), and the import should go on
past a bad file. Then, unless --skip-memory, `bench/import_memory.py` for the peak RSS of importing
a folder of 20 images of 9000x9000 pixels.

    python bench/hostile.py [--skip-memory] [--json]

Everything happens in a temporary folder. The embedding cache is an overlay: links to the shard
files of the shared cache (`data/cache/embeddings`, so the demo images need no embedding), with
anything new written beside the links, never into the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHARED_CACHE = REPO / "data" / "cache" / "embeddings"
DEMO = REPO / "data" / "datasets" / "demo-200"
IMPORT_TIMEOUT = 600        # seconds; an import still running then is reported as a hang
CLEAN = (ValueError, PermissionError)    # ProjectError, StoreError, ImageError, UnsafePathError...


@dataclass
class Case:
    category: str
    what: str
    input: str          # repr of what was tried
    refused: bool
    clean: bool         # refused with a message, as one of our errors, naming the bad thing
    reason: str


def attempt(category: str, what: str, value, action: Callable[[], object],
            names: tuple[str, ...] = (), after: Callable[[], str | None] | None = None) -> Case:
    """Run `action`, expecting it to refuse `value`. `names`: texts one of which the message must
    hold (it names the bad thing); `after`: a check of side effects, returning a problem or None."""
    try:
        result = action()
    except Exception as exc:     # noqa: BLE001 (what is raised is the measurement)
        message = str(exc).strip()
        clean = isinstance(exc, CLEAN) and bool(message)
        reason = f"{type(exc).__name__}: {message}"
        if not clean:
            reason += f" | raised at {product_frame(exc.__traceback__)}"
        if names and not any(n in message for n in names):
            clean = False
            reason += " [the message does not name the input]"
        refused = True
    else:
        refused, clean = False, False
        reason = f"accepted (returned {result!r:.160})"
    problem = after() if after else None
    if problem:
        clean = False
        reason += f" [{problem}]"
    return Case(category, what, repr(value), refused, clean, reason)


def product_frame(tb) -> str:
    """Where in the product's code an exception came out: the innermost frame of loop/, models/,
    pages/ or app.py, as 'file:line (function)'."""
    frames = [f for f in traceback.extract_tb(tb) if f.filename.startswith(str(REPO))
              and not f.filename.startswith((str(REPO / "bench"), str(REPO / ".venv")))]
    if not frames:
        return "(outside the product's code)"
    f = frames[-1]
    return f"{Path(f.filename).relative_to(REPO)}:{f.lineno} ({f.name}: {f.line})"


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (not following links): kind, size, mtime, link target; the
    database files are left out."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if name.startswith("juicer.db"):      # the store's own files change as it works
                continue
            info = path.lstat()
            target = os.readlink(path) if path.is_symlink() else None
            # A folder's mtime changes with its entries, which are compared themselves.
            entries[str(path.relative_to(root))] = (
                (info.st_mode >> 12, None, None, None) if path.is_dir() and not path.is_symlink()
                else (info.st_mode >> 12, info.st_size, info.st_mtime_ns, target))
    return entries


def tree_changed(root: Path, before: dict, ignore: tuple[str, ...] = ()) -> str | None:
    after = snapshot(root)
    changed = sorted(k for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and not k.startswith(ignore))
    return f"changed on disk: {', '.join(changed[:5])}" if changed else None


def overlay_cache(into: Path) -> Path:
    """An embedding cache that reads the shared one's shards (links) and writes only here."""
    if SHARED_CACHE.is_dir():
        for backbone in SHARED_CACHE.iterdir():
            if backbone.is_dir():
                (into / backbone.name).mkdir(parents=True, exist_ok=True)
                for shard in backbone.iterdir():
                    if shard.name.endswith((".npy", ".hashes")):
                        (into / backbone.name / shard.name).symlink_to(shard)
    into.mkdir(parents=True, exist_ok=True)
    return into


def good_images(n_per_class: int = 3) -> dict[str, list[bytes]]:
    """{class: [PNG bytes]}: demo images (embedded in the shared cache already) when the demo is
    written out, else small made-up PNGs."""
    out = {}
    for cls in ("Cat", "Dog"):
        files = sorted((DEMO / cls).glob("*.png"))[:n_per_class] if (DEMO / cls).is_dir() else []
        out[cls] = [f.read_bytes() for f in files] or [_png(32, 32, seed=k + 10 * len(out))
                                                        for k in range(n_per_class)]
    return out


# -- crafted files --------------------------------------------------------------------------

def _png(width: int, height: int, seed: int = 0, mode: str = "RGB", fmt: str = "PNG", **save) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt, **save)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width` x `height` (valid CRCs), with a tiny IDAT."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 header is patched to claim `width` x `height`."""
    data = bytearray(_png(16, 16, fmt="JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    """A BMP header claiming `width` x `height` at 24 bits, with a few bytes of pixels."""
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + header + b"\x00" * 16


def corrupt_body(data: bytes, keep: int, seed: int) -> bytes:
    """`data` with everything after its first `keep` bytes replaced by random bytes."""
    rng = random.Random(seed)
    return data[:keep] + bytes(rng.randrange(256) for _ in range(len(data) - keep))


def big_png(side: int) -> bytes:
    """A real, flat `side` x `side` PNG (small on disk; huge decoded)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, "PNG")
    return buffer.getvalue()


def png_with_text_bomb(megabytes: int = 64) -> bytes:
    """A real small PNG carrying a zTXt chunk that inflates to `megabytes` MB of zeros."""
    data = _png(16, 16, seed=9)
    ihdr_end = 8 + 25
    bomb = b"Comment\x00\x00" + zlib.compress(bytes(megabytes << 20), 9)
    return data[:ihdr_end] + _chunk(b"zTXt", bomb) + data[ihdr_end:]


CHILD_IMPORT = """
import json, sys, traceback
from pathlib import Path
sys.path.insert(0, "bench")
from hostile import product_frame
from loop.project import Paths, create_project
from loop.store import Store
folder, work, cache, name = sys.argv[1:5]
paths = Paths(Path(work), cache_dir=Path(cache))
store = Store(paths.database)
try:
    project = create_project(store, name, Path(folder), paths)
except Exception as exc:
    left = [(p["name"], len(store.images(p["id"], status=None))) for p in store.projects()]
    print(json.dumps({"error": type(exc).__name__, "message": str(exc), "clean": isinstance(
        exc, (ValueError, PermissionError)), "left": left,
        "where": product_frame(exc.__traceback__)}))
    sys.exit(0)
status = project.status()
print(json.dumps({"skipped": status["skipped"], "model_versions": status["model_versions"],
                  "imported": [i["path"] for i in project.store.images(project.id)]}))
"""


def run_import(folder: Path, work: Path, cache: Path) -> tuple[dict, float]:
    """create_project of `folder` in a child process, with a timeout (a hang is a result)."""
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", CHILD_IMPORT, str(folder), str(work), str(cache),
                               "hostile"], cwd=REPO, capture_output=True, text=True,
                              timeout=IMPORT_TIMEOUT, check=False)
        lines = done.stdout.strip().splitlines()
        result = json.loads(lines[-1]) if lines else {
            "error": f"exit {done.returncode}", "message": done.stderr[-1500:], "clean": False,
            "left": [], "where": "?"}
    except subprocess.TimeoutExpired:
        result = {"error": "hang", "message": f"the import did not finish in {IMPORT_TIMEOUT} s",
                  "clean": False, "left": [], "where": "?"}
    return result, time.perf_counter() - started


def labeled_folder(folder: Path, images: dict[str, list[bytes]]) -> list[str]:
    """`folder`/<class>/goodK.png for the good images; their relative paths."""
    good = []
    for cls, blobs in images.items():
        (folder / cls).mkdir(parents=True)
        for k, blob in enumerate(blobs):
            (folder / cls / f"good{k}.png").write_bytes(blob)
            good.append(f"{cls}/good{k}.png")
    return good


def judge(crafted: list[tuple[str, str]], good: list[str], folder: Path, result: dict,
          seconds: float, checks: dict) -> list[Case]:
    """A case per crafted file from one import's result, and the check that the import went on."""
    cases = []
    if "error" in result:
        left = [f"{n} ({k} images)" for n, k in result["left"]]
        for relative, what in crafted:
            named = relative.rsplit("/", 1)[-1] in result["message"]
            cases.append(Case("files", what, repr(relative), True, False,
                              f"the whole import failed ({result['error']}: {result['message']})"
                              + f" | raised at {result['where']}"
                              + ("" if named else " [the message does not name the file]")
                              + " [one bad file stopped the import of every good one]"
                              + (f" [the failed import left project(s) behind: {', '.join(left)}]"
                                 if left else "")))
        checks[f"good images imported beside {', '.join(repr(r) for r, _ in crafted)}"] = False
        return cases
    skipped = dict(result["skipped"])
    imported = set(result["imported"])
    for relative, what in crafted:
        # A name that is not UTF-8 is listed as it reads with its bytes escaped (\xff).
        shown = os.fsencode(relative).decode("utf-8", "backslashreplace")
        relative = relative if relative in skipped else shown
        name = relative.rsplit("/", 1)[-1]
        if relative in skipped:
            reason = skipped[relative]
            clean = bool(reason.strip()) and name in reason and "Traceback" not in reason
            cases.append(Case("files", what, repr(relative), True, clean,
                              reason + ("" if clean else " [the reason does not name the file]")))
        elif relative in imported:
            cases.append(Case("files", what, repr(relative), False, False, "imported as an image"))
        elif (folder / relative).is_dir() and not (folder / relative).is_symlink():
            cases.append(Case("files", what, repr(relative), True, True,
                              "ignored: a folder is walked into, never read as an image (not "
                              "listed as skipped: there is no file to list)"))
        else:
            cases.append(Case("files", what, repr(relative), False, False,
                              "neither imported nor listed as skipped"))
    missing = sorted(set(good) - imported)
    checks[f"good images imported beside {len(crafted)} crafted file(s)"] = not missing
    print(f"import of {folder.name}: {len(good) - len(missing)} of {len(good)} good images imported"
          f"{f' (missing {missing})' if missing else ''}, {len(skipped)} file(s) listed as skipped, "
          f"{result['model_versions']} model version(s), {seconds:.0f} s")
    return cases


def files_category(tmp: Path, cache: Path, images: dict[str, list[bytes]], checks: dict) -> list[Case]:
    """Labeled folders of good demo images and crafted files, each imported in a child process
    (with a timeout: a FIFO must not hang it); `status()["skipped"]` should list every crafted
    file with its reason, and every good image should be imported. The files that might stop a
    whole import (link loops, a name that is not UTF-8) get a folder each, so one such failure
    says nothing about the others."""
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(images["Cat"][0])
    real = _png(64, 64, seed=7)
    cases = []

    folder = tmp / "imports" / "files"
    good = labeled_folder(folder, images)
    cat = folder / "Cat"
    crafted: list[tuple[str, str]] = []            # (relative path, what it is)

    def make(name: str, what: str, data: bytes | None = None, where: Path = cat) -> Path:
        path = where / name
        if data is not None:
            path.write_bytes(data)
        crafted.append((path.relative_to(folder).as_posix(), what))
        return path

    make("empty.png", "empty file", b"")
    make("text.jpg", "text named .jpg", b"this is not a JPEG, just some words\n" * 10)
    make("truncated.png", "truncated PNG (first 40% of a real one)", real[: len(real) * 2 // 5])
    make("claims-100000.png", "PNG whose IHDR claims 100,000 x 100,000, tiny IDAT",
         png_claiming(100_000, 100_000))
    make("real-9000.png", "real 9000x9000 PNG (81 MP > 50 MP default)", big_png(9000))
    with open(make("sparse-2GiB.png", "sparse 2 GiB file named .png (> 100 MB default)"), "wb") as f:
        f.truncate(2 ** 31)
    make("link-outside.png", "symlink to an image outside the folder").symlink_to(outside / "secret.png")
    make("link-passwd.png", "symlink to /etc/passwd").symlink_to("/etc/passwd")
    os.mkfifo(make("x.png", "FIFO named x.png"))
    make("y.png", "folder named y.png").mkdir()
    make("corrupt.gif", "GIF with a corrupt body",
         corrupt_body(_png(64, 64, seed=3, mode="P", fmt="GIF"), 800, 1))
    make("corrupt.tif", "TIFF (deflate) with a corrupt body",
         corrupt_body(_png(64, 64, seed=4, fmt="TIFF", compression="tiff_adobe_deflate"), 16, 2))
    make("corrupt.webp", "WebP with a corrupt body",
         corrupt_body(_png(64, 64, seed=5, fmt="WEBP", quality=80), 30, 3))
    make("claims-65000.jpg", "JPEG whose SOF0 claims 65,000 x 65,000", jpeg_claiming(65_000, 65_000))
    make("claims-100000.bmp", "BMP header claiming 100,000 x 100,000", bmp_claiming(100_000, 100_000))
    make("text-bomb.png", "PNG with a zTXt chunk inflating to 64 MB", png_with_text_bomb(64))
    (folder / "Linked").symlink_to(outside)
    crafted.append(("Linked/secret.png", "class sub-folder 'Linked' that is a link to an outside folder"))
    result, seconds = run_import(folder, tmp / "files-work", cache)
    cases += judge(crafted, good, folder, result, seconds, checks)

    # One folder each for what might stop the whole import.
    def alone(key: str, what: str, plant: Callable[[Path], str]) -> None:
        folder = tmp / "imports" / f"files-{key}"
        good = labeled_folder(folder, images)
        relative = plant(folder / "Cat")
        result, seconds = run_import(folder, tmp / f"files-{key}-work", cache)
        cases.extend(judge([(f"Cat/{relative}", what)], good, folder, result, seconds, checks))

    def self_loop(cat: Path) -> str:
        (cat / "loop.png").symlink_to("loop.png")
        return "loop.png"

    def two_loop(cat: Path) -> str:
        (cat / "a.png").symlink_to("b.png")
        (cat / "b.png").symlink_to("a.png")
        return "a.png"

    def not_utf8(cat: Path) -> str:
        with open(os.fsencode(cat) + b"/\xff\xfe.png", "wb") as f:
            f.write(images["Dog"][0])
        return os.fsdecode(b"\xff\xfe.png")

    alone("loop", "symlink named loop.png pointing at itself", self_loop)
    alone("loop2", "two symlinks a.png -> b.png -> a.png", two_loop)
    alone("utf8", "real image whose file name is not UTF-8 (bytes ff fe)", not_utf8)
    return cases


# -- names ------------------------------------------------------------------------------------

CLASS_FOLDER_NAMES = ["a\\b", "a\nb", "<script>", "a:b", "a|b", "cat\u202egnp", "zero\u200bwidth",
                      "x" * 101, "trailing "]
FLAT_CLASS_NAMES = ["a/b", "../x", "", " x"]
PERSON_NAMES = ["folder", "auto", "seed", "auto-v3", "simulated-x", "../x", "<b>x</b>", "", "a" * 41]
PROJECT_NAMES = ["../../elsewhere", "/tmp/abs", "a b", "café"]
UPLOAD_NAMES = ["../../x.png", "/etc/passwd.png", "a\\b.png", "a\x00b.png", ".htaccess.png", "x.exe"]


def shown(name: str) -> tuple[str, ...]:
    """Texts a message that names `name` holds: its repr's start (escapes visible)."""
    return (repr(name)[1:21], name[:20]) if name else ("empty",)


def names_category(tmp: Path, cache: Path, images: dict[str, list[bytes]]) -> list[Case]:
    from loop import people
    from loop.paths import check_project_name, save_uploads
    from loop.project import Paths, Project, create_project
    from loop.session import LabelingSession
    from loop.settings import Settings
    from loop.store import Store

    work = tmp / "names-work"
    paths = Paths(work, cache_dir=cache)
    store = Store(paths.database)
    blob = images["Cat"][0]
    cases = []
    for k, name in enumerate(CLASS_FOLDER_NAMES):
        folder = tmp / "imports" / f"class-folders-{k}"
        for cls in ("Good", name):
            (folder / cls).mkdir(parents=True)
            (folder / cls / "1.png").write_bytes(blob)
        cases.append(attempt("names", "class sub-folder", name,
                             lambda f=folder, k=k: create_project(store, f"classes{k}", f, paths),
                             names=shown(name)))
    flat = tmp / "imports" / "flat"
    flat.mkdir(parents=True)
    for k, data in enumerate(images["Cat"][:2]):
        (flat / f"{k}.png").write_bytes(data)
    for k, name in enumerate(FLAT_CLASS_NAMES):
        cases.append(attempt("names", "class list of a flat folder", [name, "ok"],
                             lambda k=k, n=name: create_project(store, f"flat{k}", flat, paths,
                                                                class_names=[n, "ok"]),
                             names=shown(name)))

    # A project made straight in the store (no embedding needed to open a session on it).
    store.create_project("people", str(flat), Settings().to_json(), ["a", "b"])
    project = Project(store, "people", paths)
    for name in PERSON_NAMES:
        cases.append(attempt("names", "annotator of LabelingSession", name,
                             lambda n=name: LabelingSession(project, n),
                             names=shown(name) + (("name yourself",) if not name else ())))
        cases.append(attempt("names", "annotator of people.create_token", name,
                             lambda n=name: people.create_token(store, n, "annotator"),
                             names=shown(name) + (("''",) if not name else ())))
    before = snapshot(tmp)
    for name in PROJECT_NAMES:
        cases.append(attempt("names", "project name, Store.create_project", name,
                             lambda n=name: store.create_project(n, str(flat), Settings().to_json(),
                                                                 ["a", "b"]), names=shown(name)))
        cases.append(attempt("names", "project name, check_project_name", name,
                             lambda n=name: check_project_name(n), names=shown(name)))
    problem = tree_changed(tmp, before, ignore=("names-work",))
    if problem or [p["name"] for p in store.projects()] != ["people"]:
        cases.append(Case("names", "project names leave nothing behind", "", False, False,
                          f"{problem}; projects: {[p['name'] for p in store.projects()]}"))

    upload_root = tmp / "uploads"
    outside = [Path("/etc/passwd.png"), (upload_root / "p" / "../../x.png").resolve(),
               tmp / "x.png", Path("/x.png")]
    existed = {str(p): p.exists() for p in outside}

    def nothing_written(before: dict) -> Callable[[], str | None]:
        def check() -> str | None:
            problems = [tree_changed(tmp, before, ignore=("names-work",))]
            problems += [f"'{p}' appeared" for p in outside if p.exists() and not existed[str(p)]]
            shutil.rmtree(upload_root / "p", ignore_errors=True)    # keep the cases independent
            return "; ".join(p for p in problems if p) or None
        return check

    for name in UPLOAD_NAMES:
        before = snapshot(tmp)
        cases.append(attempt("names", "uploaded file name", name,
                             lambda n=name: save_uploads(upload_root, "p", [(n, blob)]),
                             names=shown(name), after=nothing_written(before)))
    before = snapshot(tmp)
    cases.append(attempt("names", "upload of a good file with a bad one", ["ok.png", "../../x.png"],
                         lambda: save_uploads(upload_root, "p", [("ok.png", blob), ("../../x.png", blob)]),
                         names=("../../x.png",), after=nothing_written(before)))
    return cases


# -- paths ------------------------------------------------------------------------------------

def paths_category(tmp: Path, images: dict[str, list[bytes]]) -> list[Case]:
    from loop.__main__ import main as cli
    from loop.export import to_image_folder
    from loop.paths import export_folder, import_roots, resolve_import_folder
    from loop.project import Paths, Project
    from loop.settings import Settings
    from loop.store import Store
    from models.images import file_hash

    data = tmp / "data"
    data.mkdir()
    store = Store(Paths(data).database)
    roots = import_roots(data, store)
    outside = tmp / "outside-folder"
    (outside / "Cat").mkdir(parents=True)
    (data / "imports" / "etc-link").symlink_to("/etc")
    (data / "imports" / "outside-link").symlink_to(outside)
    (data / "imports" / "loop-link").symlink_to("loop-link")
    cases = []
    for folder in ["/etc", "../../..", "/root", "imports/../..", "datasets/../../..", "etc-link",
                   "outside-link", str(data / "imports" / "outside-link"), "~", "loop-link"]:
        cases.append(attempt("paths", "folder to import (browser)", folder,
                             lambda f=folder: resolve_import_folder(f, roots), names=shown(folder)))
    before = snapshot(tmp)
    for name in ["../x", "/tmp/x", "a/b", "..", ".hidden", ""]:
        cases.append(attempt("paths", "export folder name (browser)", name,
                             lambda n=name: export_folder(data, n), names=shown(name),
                             after=lambda b=before: tree_changed(tmp, b, ignore=("data/exports",))))

    # Projects made straight in the store: "victim" holds a class named '../../../victim'
    # (an old database, or one edited by hand), "plain" is an ordinary one.
    def make(name: str) -> Project:
        root = data / "imports" / name
        rows = []
        for cls, blobs in images.items():
            (root / cls).mkdir(parents=True)
            for k, blob in enumerate(blobs[:2]):
                (root / cls / f"{k}.png").write_bytes(blob)
                rows.append({"path": f"{cls}/{k}.png", "hash": file_hash(root / cls / f"{k}.png"),
                             "split": "pool"})
        pid = store.create_project(name, str(root.resolve()), Settings().to_json(), list(images))
        store.add_images(pid, rows)
        return Project(store, name, Paths(data, cache_dir=tmp / "cache"))

    victim_project = make("victim")
    store.db["classes"].insert({"project_id": victim_project.id, "name": "../../../victim",
                                "position": 2})
    ids = [i["id"] for i in store.images(victim_project.id)]
    store.add_labels(victim_project.id, [(ids[0], "../../../victim"), (ids[1], "Cat")],
                     annotator="folder", source="imported")
    victim_project = Project(store, "victim", victim_project.paths)
    dest = tmp / "deep" / "a" / "b" / "dest"     # dest/../../../victim = tmp/deep/victim
    victim = tmp / "deep" / "victim"
    victim.mkdir(parents=True)
    for name in ("Cat__0.png", "Dog__0.png", "0.png"):
        (victim / name).write_bytes(b"VICTIM: must stay as it is")
    before = snapshot(tmp)

    def victim_intact() -> str | None:
        problems = [tree_changed(tmp, before, ignore=("deep/a/b/dest",))]
        problems += [f"'{p}' changed" for p in victim.iterdir()
                     if p.read_bytes() != b"VICTIM: must stay as it is"]
        return "; ".join(p for p in problems if p) or None

    cases.append(attempt("paths", "ImageFolder export of a class named '../../../victim'",
                         "../../../victim", lambda: to_image_folder(victim_project, dest),
                         names=("../../../victim",), after=victim_intact))

    plain = make("plain")
    pids = [i["id"] for i in store.images(plain.id)]
    store.add_labels(plain.id, [(pids[0], "Cat"), (pids[-1], "Dog")], annotator="folder",
                     source="imported")
    full = tmp / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    before = snapshot(tmp)
    cases.append(attempt("paths", "ImageFolder export into a non-empty folder", str(full),
                         lambda: to_image_folder(plain, full), names=(str(full),),
                         after=lambda: tree_changed(tmp, before)))
    link = tmp / "dest-link"
    link.symlink_to(outside)
    before = snapshot(tmp)
    cases.append(attempt("paths", "ImageFolder export into a link to an outside folder", str(link),
                         lambda: to_image_folder(plain, link), names=(str(link),),
                         after=lambda: tree_changed(tmp, before)))

    def run_cli(args: list[str]) -> Case:
        err, out = io.StringIO(), io.StringIO()
        before = snapshot(tmp)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                rc = cli(["--data", str(data), *args])
        except BaseException as exc:   # noqa: BLE001 (a traceback out of main is the finding)
            return Case("paths", "command line", repr(" ".join(args)), True, False,
                        f"main raised {type(exc).__name__}: {exc} | raised at "
                        f"{product_frame(exc.__traceback__)}")
        message = err.getvalue().strip()
        clean = rc == 2 and message.startswith("error:") and "Traceback" not in message
        problem = tree_changed(tmp, before, ignore=("data/juicer.db",))
        if problem:
            clean = False
            message += f" [{problem}]"
        return Case("paths", "command line", repr(" ".join(args)), rc != 0, clean,
                    f"exit {rc}; stderr: {message or '(nothing)'}"
                    + (f"; stdout: {out.getvalue().strip()[:200]}" if rc == 0 else ""))

    existing = tmp / "labels.csv"
    existing.write_text("mine")
    cases.append(run_cli(["roots", "add", "/nonexistent"]))
    cases.append(run_cli(["roots", "add", str(existing)]))
    cases.append(run_cli(["export", "plain", "--format", "imagefolder", "--out", str(full)]))
    cases.append(run_cli(["export", "victim", "--format", "imagefolder", "--out", str(tmp / "new")]))
    cases.append(run_cli(["export", "plain", "--format", "csv", "--out", str(existing)]))
    cases.append(run_cli(["export", "../../etc", "--format", "csv"]))
    return cases


# -- memory -----------------------------------------------------------------------------------

def memory_figures() -> dict | None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "import_memory.py"), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=3600, check=False)
    lines = done.stdout.strip().splitlines()
    print("\n".join(lines[:-1]))      # its table; its JSON line is folded into ours
    if done.returncode or not lines:
        print(f"import_memory.py failed ({done.returncode}): {done.stderr[-2000:]}")
        return None
    return json.loads(lines[-1])


# -- report -----------------------------------------------------------------------------------

def report(cases: list[Case]) -> dict:
    by_category: dict[str, dict] = {}
    for case in cases:
        counts = by_category.setdefault(case.category, {"tried": 0, "refused": 0})
        counts["tried"] += 1
        counts["refused"] += case.refused and case.clean
    for category, counts in by_category.items():
        mine = [c for c in cases if c.category == category]
        bad = [c for c in mine if not (c.refused and c.clean)]
        print(f"\n== {category}: {counts['tried']} tried, {counts['refused']} refused cleanly, "
              f"{sum(not c.refused for c in mine)} not refused, "
              f"{sum(c.refused and not c.clean for c in mine)} refused but not cleanly")
        for c in mine:
            mark = "refused" if c.refused and c.clean else "NOT REFUSED" if not c.refused else "UNCLEAN"
            print(f"  [{mark}] {c.what}: {c.input}")
            print(textwrap.fill(c.reason, width=110, initial_indent=" " * 6,
                                subsequent_indent=" " * 6, replace_whitespace=False))
        if bad:
            print(f"  -> not refused cleanly: {', '.join(c.input for c in bad)}")
    return by_category


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-memory", action="store_true", help="leave out bench/import_memory.py "
                        "(about a minute)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    shared_before = snapshot(SHARED_CACHE) if SHARED_CACHE.exists() else {}
    with tempfile.TemporaryDirectory(prefix="juicer-hostile-") as tmp:
        tmp = Path(tmp).resolve()
        cache = overlay_cache(tmp / "cache")
        images = good_images()
        checks: dict[str, bool] = {}
        cases = files_category(tmp, cache, images, checks)
        cases += names_category(tmp, cache, images)
        cases += paths_category(tmp, images)
    shared_after = snapshot(SHARED_CACHE) if SHARED_CACHE.exists() else {}
    checks["shared embedding cache unchanged (nothing written into the repository)"] = (
        not set(shared_before) - set(shared_after))
    by_category = report(cases)
    refused = sum(c.refused and c.clean for c in cases)
    not_refused = [f"{c.category}: {c.what}: {c.input}: {c.reason}" for c in cases if not c.refused]
    unclean = [f"{c.category}: {c.what}: {c.input}: {c.reason}" for c in cases if c.refused and not c.clean]
    print("\n== checks")
    for check, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {check}")
    print(f"\n{len(cases)} crafted files, names and paths tried: {refused} refused cleanly, "
          f"{len(not_refused)} not refused, {len(unclean)} refused but not cleanly")
    memory = None
    if not args.skip_memory:
        print("\n== memory: python bench/import_memory.py --json")
        memory = memory_figures()
    if args.json:
        print(json.dumps({"tried": len(cases), "refused": refused, "not_refused": not_refused,
                          "unclean": unclean, "checks": checks, "by_category": by_category,
                          "memory": memory}))
    return 1 if not_refused or unclean or not all(checks.values()) else 0

if __name__ == "__main__":
    sys.exit(main())
