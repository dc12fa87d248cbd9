"""A labeling project: its images on disk, their cached embeddings, the hold-out set, the seed
labels, and retraining + scoring the head. Everything the app and the command line do to a
project goes through here.

Creating one: `create_project(store, "birds", "/photos/birds")` for a folder with one sub-folder
per class, or with `class_names=[...]` for a flat folder of unlabeled images.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import os
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loop.embeddings import EmbeddingCache, fill_cache
from loop.evaluation import evaluate
from loop.settings import Settings
from loop.store import Store, StoreError, owner_name
from models.images import IMAGE_SUFFIXES, ImageError, file_hash

Progress = Callable[[int, int], None]

_heads: OrderedDict[str, object] = OrderedDict()
_heads_lock = threading.Lock()


def load_head(weights_path: str):
    """A published head, loaded once per process (a version's weights never change once
    published); the 32 most recently used stay in memory."""
    from models.heads import SoftmaxHead

    with _heads_lock:
        if weights_path in _heads:
            _heads.move_to_end(weights_path)
            return _heads[weights_path]
    if not weights_path or not Path(weights_path).is_file():
        raise ProjectError(f"the weights file of a published model version is missing "
                           f"({weights_path!r}); retrain with `python -m loop retrain NAME --force` "
                           "or restore a backup")
    head = SoftmaxHead.load(weights_path)
    _remember_head(weights_path, head)
    return head


def _remember_head(weights_path: str, head) -> None:
    with _heads_lock:
        _heads[weights_path] = head
        _heads.move_to_end(weights_path)
        while len(_heads) > 32:
            _heads.popitem(last=False)


_tuned: dict[str, object] = {}
_tuned_lock = threading.Lock()


def tuned_network(row: dict):
    """The fine-tuned backbone of a `backbone_versions` row (its base with the tuned top),
    built once per process: a version's weights never change once written."""
    from models.backbones import load_backbone
    from models.finetune import TunedBackbone, load_top_weights

    with _tuned_lock:
        if row["key"] not in _tuned:
            path = row["weights_path"]
            if not path or not Path(path).is_file():
                raise ProjectError(f"the weights of fine-tuned backbone '{row['key']}' are missing "
                                   f"({path!r}); fine-tune again or restore a backup")
            _tuned[row["key"]] = TunedBackbone(load_backbone(row["base"]), row["start_block"],
                                               load_top_weights(path), row["key"])
        return _tuned[row["key"]]


class ProjectError(ValueError):
    """A project request that cannot be done; the message says what and how to fix it."""


@dataclass
class Paths:
    """Where a data root keeps things: the database, the shared embedding cache, head weights."""

    root: Path
    cache_dir: Path | None = None    # default: $JUICER_CACHE, else <root>/cache/embeddings

    @property
    def database(self) -> Path | str:
        """The store: `$JUICER_DB` (a postgresql:// URL, or a SQLite file), else <root>/juicer.db."""
        named = os.environ.get("JUICER_DB")
        if named:
            return named if "://" in named else Path(named)
        return self.root / "juicer.db"

    @property
    def cache(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        return Path(os.environ.get("JUICER_CACHE", self.root / "cache" / "embeddings"))

    def heads(self, project: str) -> Path:
        return self.root / "heads" / project

    def backbones(self, project: str) -> Path:
        """Where a project's fine-tuned backbone weights live (loop.tuning)."""
        return self.root / "backbones" / project


# -- reading a folder ---------------------------------------------------------------------------

# Names sorted in memory at once when listing one folder: a longer listing is sorted in runs of
# this many, spilled to temporary files and merged, so a folder of a million files costs the
# memory of SORT_RUN names, not of a million, and still comes out in name order.
SORT_RUN = 50_000
# Files hashed and stored per transaction by an import: the database's write lock is held for one
# chunk at a time (a fraction of a second), never for the whole folder, so people labeling other
# projects meanwhile are not held up, and the rows in memory are one chunk's.
IMPORT_CHUNK = 2_000
# Image rows read from the store at a time by the steps after an import (embedding, and the
# hold-out and seed draws, which read compact arrays besides): a chunk's rows in memory, never a
# million. Ten of fill_cache's 1,024-image shards, so embedding a new project writes full shards.
PREPARE_CHUNK = 10_240
_RUN_BLOCK = 1 << 16             # bytes read back from each spilled run at a time
_SUFFIXES = frozenset(os.fsencode(s) for s in IMAGE_SUFFIXES)


def folder_classes(root: str | Path, labeled: bool) -> tuple[Path, list[str]]:
    """(`root` resolved, its class sub-folders, sorted): checked before anything is read or
    stored. With `labeled`, each visible sub-folder of `root` is a class (at least 2, each a
    plain folder name); without, there are none."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ProjectError(f"folder '{root}' does not exist")
    if not root.is_dir():
        raise ProjectError(f"'{root}' is a file; give the folder that holds the images")
    root = root.resolve()
    if not labeled:
        return root, []
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ProjectError(f"folder '{root}' has {len(classes)} class sub-folder(s); a labeled "
                           "project needs one sub-folder per class (at least 2), or give a class "
                           "list for a flat folder of unlabeled images")
    from loop.paths import UnsafeNameError, check_name

    for name in classes:    # a class name becomes a folder name again on export
        try:
            check_name(name, "class sub-folder")
        except UnsafeNameError as exc:
            raise ProjectError(f"folder '{root}': {exc}; rename that sub-folder (a class name "
                               "is one plain folder name) and try again") from None
    return root, classes


def _spill(names: list[bytes]):
    """A sorted run of names in a temporary file, NUL-separated (NUL is in no file name)."""
    run = tempfile.TemporaryFile(buffering=0)   # noqa: SIM115 (open until merged; read in blocks)
    run.write(b"".join(name + b"\0" for name in names))
    run.seek(0)
    return run


def _read_run(run) -> Iterator[bytes]:
    with run:
        rest = b""
        while block := run.read(_RUN_BLOCK):
            *names, rest = (rest + block).split(b"\0")
            yield from names


def _listing(directory: bytes) -> tuple[list[bytes], Iterator[bytes]]:
    """(sub-folder names, sorted; image file names, in sorted order, as a stream) of one folder,
    read with os.scandir: hidden names (a leading dot) left out, links to folders not followed,
    an unreadable folder listed as empty, as os.walk does."""
    folders: list[bytes] = []
    run: list[bytes] = []
    runs = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(b"."):
                    continue
                try:
                    is_folder = entry.is_dir()
                except OSError:
                    is_folder = False
                if is_folder:
                    if not entry.is_symlink():
                        folders.append(name)
                elif os.path.splitext(name)[1].lower() in _SUFFIXES:
                    run.append(name)
                    if len(run) == SORT_RUN:
                        runs.append(_spill(sorted(run)))
                        run = []
    except OSError:
        pass
    run.sort()
    if not runs:
        return sorted(folders), iter(run)
    return sorted(folders), heapq.merge(*(_read_run(r) for r in runs), run)


def _entry(root: Path, path: Path, label: str | None) -> tuple[str, str | None, str | None]:
    relative = path.relative_to(root).as_posix()
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:   # bytes that are no text: shown, never stored as is
        shown = os.fsencode(relative).decode("utf-8", "backslashreplace")
        return shown, None, f"the file name '{shown}' is not valid UTF-8 text; rename the file"
    try:
        inside = path.resolve().is_relative_to(root)
    except (RuntimeError, OSError):   # a symlink loop (RuntimeError before 3.13)
        return relative, None, f"'{relative}' is a symbolic link that loops; refused"
    if not inside:
        return relative, None, f"'{relative}' leads outside the project folder '{root}'; refused"
    return relative, label, None


def walk_folder(root: Path, classes: Sequence[str] = ()
                ) -> Iterator[tuple[str, str | None, str | None]]:
    """Stream the image files under `root` (as resolved by `folder_classes`): (path relative to
    root, class name or None, None) for a file to import, (path, None, reason) for one refused
    outright (a link leading outside `root` or looping, a name that is not UTF-8 text). With
    `classes`, only those sub-folders are read, and their files carry the sub-folder's name.

    Files come in name order within a folder, then its sub-folders depth first in name order (the
    order of os.walk with sorted listings), so a folder always imports in the same order; the
    paths are never all in memory at once."""
    tops = [(root / c, c) for c in classes] if classes else [(root, None)]
    for top, label in tops:
        stack = [os.fsencode(top)]
        while stack:
            directory = stack.pop()
            folders, files = _listing(directory)
            for name in files:
                yield _entry(root, Path(os.fsdecode(os.path.join(directory, name))), label)
            stack.extend(os.path.join(directory, f) for f in reversed(folders))


def _no_images(root: Path) -> str:
    return f"folder '{root}' holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"


def scan_folder(root: str | Path, labeled: bool
                ) -> tuple[list[tuple[str, str | None]], list[str], list[tuple[str, str]]]:
    """Find the image files under `root`, as lists (an import streams `walk_folder` instead).

    Returns ([(path relative to root, class name or None)], class names found, [(path, reason)]
    for files refused outright). With `labeled`, each sub-folder of `root` is a class. Paths are
    resolved and must stay inside `root`: a link that leads outside is refused, not followed.
    """
    root, classes = folder_classes(root, labeled)
    found: list[tuple[str, str | None]] = []
    refused: list[tuple[str, str]] = []
    for relative, label, reason in walk_folder(root, classes):
        if reason is None:
            found.append((relative, label))
        else:
            refused.append((relative, reason))
    if not found and not refused:
        raise ProjectError(_no_images(root))
    return found, classes, refused


def stratified_groups(classes: Sequence, sizes: Sequence[int], size: int,
                      rng: np.random.Generator) -> list[int]:
    """Indices of a random sample of whole groups (group k holds `sizes[k]` items of class
    `classes[k]`) that together hold at most `size` items, spread over the classes in proportion
    to their item counts. Every class keeps at least one group outside the sample, so no class
    vanishes from the training pool.

    >>> picked = stratified_groups(["a"] * 6 + ["b"] * 3, [1, 2, 1, 3, 1, 1, 1, 1, 1], 5,
    ...                            np.random.default_rng(0))
    >>> sum([1, 2, 1, 3, 1, 1, 1, 1, 1][k] for k in picked) <= 5
    True
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if size <= 0 or total == 0:
        return []
    # Arrays, not a list per class: a million groups cost a few int64 arrays. Classes go in the
    # order of their names as text, each class's groups in index order (the draw depends on both).
    labels, codes = _class_codes(classes)
    names = sorted(range(len(labels)), key=lambda j: str(labels[j]))
    rank = np.empty(len(names), dtype=np.int64)
    rank[names] = np.arange(len(names))
    ranks = rank[codes]                                  # each group's class, by its place in names
    by_class = np.argsort(ranks, kind="stable")
    members = np.split(by_class, np.cumsum(np.bincount(ranks, minlength=len(names)))[:-1])
    counts = np.array([sizes[m].sum() for m in members], dtype=float)
    # Quotas in items by largest remainder, so they add up to `size` exactly (rounding each class
    # on its own overshot by up to half an item per class); ties go to a random class.
    ideal = min(size, total) * counts / total
    quota = np.floor(ideal).astype(np.int64)
    short = min(size, total) - int(quota.sum())
    order = rng.permutation(len(names))
    order = order[np.argsort(-(ideal - quota)[order], kind="stable")]
    quota[order[:short]] += 1
    picked: list[int] = []
    outside = np.array([len(m) for m in members], dtype=np.int64)
    taken = np.zeros(len(sizes), dtype=bool)
    room = size
    smallest = int(sizes.min())    # once less than this is left, no group fits: stop looking
    for c, q in enumerate(quota):
        for k in rng.permutation(members[c]):
            if min(q, room) < smallest:
                break
            if outside[c] > 1 and sizes[k] <= q and sizes[k] <= room:
                picked.append(int(k))
                taken[k] = True
                outside[c] -= 1
                q -= sizes[k]
                room -= sizes[k]
    # Groups too big for what their class had left, or a class too small to give its share,
    # leave room: fill it from the groups not taken, whatever their class.
    for k in rng.permutation(np.flatnonzero(~taken)):
        if room <= 0 or room < smallest:
            break
        if outside[ranks[k]] > 1 and sizes[k] <= room:
            picked.append(int(k))
            outside[ranks[k]] -= 1
            room -= sizes[k]
    return picked


def _class_codes(classes: Sequence) -> tuple[list, np.ndarray]:
    """(the distinct classes, in order of first appearance, or ascending for an integer array;
    each item's index into them as an int64 array)."""
    if isinstance(classes, np.ndarray) and classes.dtype.kind in "iu":
        labels, codes = np.unique(classes, return_inverse=True)
        return labels.tolist(), codes.reshape(-1).astype(np.int64)
    index: dict = {}
    codes = np.fromiter((index.setdefault(c, len(index)) for c in classes), dtype=np.int64,
                        count=len(classes))
    return list(index), codes


def copy_groups(images: Sequence[dict]) -> dict[str, list[dict]]:
    """The images grouped by content hash: each group holds byte-for-byte copies of one file."""
    groups: dict[str, list[dict]] = {}
    for image in images:
        groups.setdefault(image["hash"], []).append(image)
    return groups


def known_classes(group: Sequence[dict]) -> set:
    """The folder classes the copies of one image carry (more than one: a conflict)."""
    return {i["known_class_id"] for i in group if i["known_class_id"] is not None}


def first_copies(rows: Iterable[dict], copied: set[str], seen: set[str]) -> dict[str, int]:
    """{content hash: id of its first row} of one chunk of image rows (in id order), leaving out
    the hashes in `seen`, which then takes in those of `copied`. Fed chunk after chunk, with
    `copied` the hashes of `Store.duplicate_images` (only those can come again in a later
    chunk), each content comes out once, at its first row, as from a list of every row; and
    `seen` holds the few hashes with copies, never a million.

    >>> seen = set()
    >>> first_copies([{"id": 1, "hash": "a"}, {"id": 2, "hash": "b"}], {"a"}, seen), seen
    ({'a': 1, 'b': 2}, {'a'})
    >>> first_copies([{"id": 3, "hash": "a"}, {"id": 4, "hash": "c"}], {"a"}, seen)
    {'c': 4}
    """
    first: dict[str, int] = {}
    for row in rows:
        if row["hash"] not in seen:
            first.setdefault(row["hash"], row["id"])
    seen.update(h for h in first if h in copied)
    return first


# -- the project ------------------------------------------------------------------------------

class Project:
    """An open project. Cheap to create; it reads what it needs from the store."""

    def __init__(self, store: Store, name: str, paths: Paths):
        self.store = store
        self.paths = paths
        row = store.project(name)
        self.id = row["id"]
        self.name = row["name"]
        self.root = Path(row["root"])
        self.settings = Settings.from_json(row["settings"])
        self.class_rows = store.classes(self.id)
        self.class_names = [c["name"] for c in self.class_rows]
        self.class_index = {c["id"]: i for i, c in enumerate(self.class_rows)}
        self._caches: dict[str, EmbeddingCache] = {}
        self._views: EmbeddingCache | None = None     # augmented views, opened on first use

    @classmethod
    def open(cls, name: str, data_dir: str | Path = "data") -> Project:
        paths = Paths(Path(data_dir))
        return cls(Store(paths.database), name, paths)

    # -- preparation: embeddings, hold-out, seeds (each step idempotent, so a crash resumes) --

    def prepare(self, on_progress: Progress | None = None) -> None:
        if import_unfinished(self.store, self.id):   # a hold-out drawn now would miss the rest
            raise ProjectError(f"project '{self.name}': the import of folder '{self.root}' has not "
                               "finished (it is running, or it stopped: create the project again "
                               "with the same folder and classes to finish it)")
        self.embed(on_progress)
        # Opening a project reads one row for each of these, never the whole log.
        if not self.store.has_images(self.id, "holdout"):
            self.draw_holdout()
        if not self.store.has_events(self.id, "seed"):
            self.draw_seeds()
        if self.store.latest_model_version(self.id) is None:
            self.retrain()   # the first version, from the seeds (None while they are too few)

    def embed(self, on_progress: Progress | None = None, backbone: str | None = None) -> dict[str, str]:
        """Embed every image not yet in the cache; mark undecodable ones skipped with the reason.
        `backbone`: another registered backbone or feature option than the project's (for
        comparing them on its images), cached under its own name; by default what the heads train
        on (`features_key`: a fine-tuned backbone once one is adopted), embedded by its network."""
        cache = self.cache_for(backbone)
        # A first pass counts what is missing, chunk by chunk (the progress total; and no network
        # is loaded when nothing is). The rows are read PREPARE_CHUNK at a time, never all at once.
        planned = [len(cache.missing([i["hash"] for i in rows]))
                   for rows in self.store.iter_images(self.id, chunk=PREPARE_CHUNK, columns=["hash"])]
        total = sum(planned)
        if not total:
            return {}
        network = self.network(backbone)     # the network of the cache filled (see cache_for)
        failures: dict[str, str] = {}
        done = 0                  # images of the chunks before this one, as counted in the first pass
        for k, rows in enumerate(self.store.iter_images(self.id, chunk=PREPARE_CHUNK,
                                                        columns=["hash", "path"])):
            def progress(finished: int, _chunk_total: int, base: int = done) -> None:
                on_progress(min(base + finished, total), total)

            items = [(i["hash"], self.root / i["path"]) for i in rows if i["hash"] not in failures]
            failures.update(fill_cache(cache, items, network.embed, network.image_size,
                                       on_progress=progress if on_progress else None,
                                       max_pixels=int(self.settings.max_megapixels * 1e6),
                                       max_bytes=int(self.settings.max_file_mb * 2**20)))
            for image in rows:    # every copy of a file that failed, in this chunk or before
                if image["hash"] in failures:
                    self.store.skip_image(image["id"], failures[image["hash"]])
            # A copy counted in an earlier chunk was embedded there, so a chunk may report less
            # than it planned: each chunk ends by reporting its planned share, and the progress
            # ends at its total.
            planned_here = planned[k] if k < len(planned) else 0
            done = min(done + planned_here, total)
            if on_progress and planned_here:
                on_progress(done, total)
        return failures

    @property
    def features_key(self) -> str:
        """What the heads train on now: the project's backbone, or the newest fine-tuned version
        of it that was adopted (loop.tuning); also the name of its embedding cache."""
        row = self.store.active_backbone(self.id)
        return row["key"] if row else self.settings.backbone

    @property
    def cache(self) -> EmbeddingCache:
        """The embedding cache the heads train on now (see `features_key`)."""
        return self.cache_for(None)

    def cache_for(self, backbone: str | None = None) -> EmbeddingCache:
        """The embedding cache of `backbone`: a registered backbone or feature option, a
        fine-tuned version of this project's (its key), or by default what the heads train on."""
        key = self.features_key if backbone is None else backbone
        if key not in self._caches:
            from models.backbones import BACKBONES

            # Refused before any folder is made.
            if key not in BACKBONES and self.store.backbone_version(self.id, key) is None:
                raise ValueError(f"unknown backbone '{key}'; known: {', '.join(BACKBONES)}")
            self._caches[key] = EmbeddingCache(self.paths.cache, key)
        return self._caches[key]

    def network(self, backbone: str | None = None):
        """The network that embeds images for `backbone` (as in `cache_for`): a registered
        backbone, or a fine-tuned one (the base with its tuned top), loaded once per process."""
        from models.backbones import BACKBONES, load_backbone

        key = self.features_key if backbone is None else backbone
        if key in BACKBONES:
            return load_backbone(key)
        row = self.store.backbone_version(self.id, key)
        if row is None:
            raise ValueError(f"unknown backbone '{key}'; known: {', '.join(BACKBONES)}")
        return tuned_network(row)

    def draw_holdout(self) -> list[int]:
        """Put a random sample of images into the hold-out split: at most `holdout_size` images
        counting every copy, and those already there (drawing again only tops it up), stratified
        by folder class where known. Exact duplicates go together; an image whose copies sit in
        different class folders stays out, as its truth is ambiguous. Labeled folders import the
        hold-out's labels. Returns the ids of the images put in now."""
        s = self.settings
        counts = self.store.split_counts(self.id)
        held = counts.get("holdout", 0)
        size = min(s.holdout_size, round(s.holdout_fraction * sum(counts.values()))) - held
        # The groups that may join (all in the pool, one folder class at most) as three arrays,
        # grouped by the database: a million images cost tens of megabytes, never their rows.
        groups = self.store.pool_copy_groups(self.id, chunk=PREPARE_CHUNK)
        # Each group's folder class, None where it has none (the draw orders classes by their
        # names as text, so None must stay None), one shared object per class.
        values, codes = np.unique(groups["class_id"], return_inverse=True)
        labels = np.array([None if c < 0 else c for c in values.tolist()], dtype=object)
        rng = np.random.default_rng([s.seed, 1])
        picked = stratified_groups(labels[codes.reshape(-1)], groups["size"], size, rng)
        # The copies of each group drawn, in the order drawn, each group's in id order.
        firsts = [int(f) for f in groups["first"][picked]]
        members: dict[int, list[dict]] = {}
        for row in self.store.copies(self.id, firsts):
            members.setdefault(row["copy_of"], []).append(row)
        chosen = [image for first in firsts for image in members[first]]
        ids = [image["id"] for image in chosen]
        known = [(i["id"], i["known_class_id"]) for i in chosen if i["known_class_id"] is not None]
        with self.store.transaction():   # the split and its labels, or neither (a resume redraws)
            self.store.set_split(ids, "holdout")
            if known:
                self.store.add_labels(self.id, known, annotator="folder", source="imported")
        return ids

    def draw_seeds(self) -> list[int]:
        """Label `seeds_per_class` random pool images per class from their folder class (labeled
        folders only; an unlabeled project gets its first labels from people). With the
        `seed_picker` "cold-start", the cold-start strategy (TypiClust) picks seeds_per_class x
        classes pool images instead, blind to their folders (what a person starting from an
        unlabeled folder is asked first), and they are labeled from their folders."""
        rng = np.random.default_rng([self.settings.seed, 2])
        cold_start = self.settings.seed_picker == "cold-start"
        # An image whose copies sit in different class folders has no one truth: never a seed.
        ambiguous = self.store.ambiguous_hashes(self.id)
        # The pool's ids and folder classes as int64 arrays, read a chunk of rows at a time (the
        # cold-start picker needs their embeddings too, gathered per chunk).
        ids_read, classes_read, vectors = [], [], []
        for rows in self.store.iter_images(self.id, split="pool", chunk=PREPARE_CHUNK,
                                           columns=["hash", "known_class_id"]):
            rows = [i for i in rows if i["known_class_id"] is not None and i["hash"] not in ambiguous]
            ids_read.append(np.array([i["id"] for i in rows], dtype=np.int64))
            classes_read.append(np.array([i["known_class_id"] for i in rows], dtype=np.int64))
            if cold_start and rows:
                vectors.append(self.embeddings_of(rows))
        pool = np.concatenate(ids_read) if ids_read else np.zeros(0, np.int64)
        pool_classes = np.concatenate(classes_read) if classes_read else np.zeros(0, np.int64)
        if cold_start and len(pool):
            from loop.strategies import typiclust

            n = min(len(pool), self.settings.seeds_per_class * len(self.class_names))
            X = np.concatenate(vectors)
            chosen = typiclust(X, np.zeros((0, X.shape[1]), np.float32), n, rng)
            seeds = [(int(pool[k]), int(pool_classes[k])) for k in chosen]
            self.store.add_labels(self.id, seeds, annotator="folder", source="seed")
            return [i for i, _ in seeds]
        seeds = []
        for class_id in np.unique(pool_classes).tolist():
            ids = pool[pool_classes == class_id]          # in id order, as the rows were read
            take = min(self.settings.seeds_per_class, len(ids))
            seeds.extend((int(i), class_id) for i in rng.choice(ids, size=take, replace=False))
        if seeds:
            self.store.add_labels(self.id, seeds, annotator="folder", source="seed")
        return [i for i, _ in seeds]

    # -- data for training and scoring ----------------------------------------------------------

    def labeled(self, split: str, up_to_event: int | None = None, backbone: str | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image ids, embeddings, class indices) of the labeled images of a split; embeddings
        of `backbone` (a registered backbone or feature option, default the project's)."""
        labels = self.store.current_labels(self.id, split=split, up_to_event=up_to_event)
        ids = np.array(sorted(labels), dtype=np.int64)
        # The labeled images' hashes only: every retrain reads this, and a split may hold a million.
        hashes = self.store.image_hashes(self.id, ids)
        cache = self.cache_for(backbone)
        X = cache.get([hashes[i] for i in ids]) if len(ids) else np.zeros((0, 0), np.float32)
        y = np.array([self.class_index[labels[i]] for i in ids], dtype=np.int64)
        return ids, X, y

    def unlabeled_pool(self, labeled_ids: Sequence[int], limit: int, seed: int = 0,
                       backbone: str | None = None) -> np.ndarray:
        """Embeddings (of `backbone`, default the project's) of at most `limit` pool images
        without a label (not in `labeled_ids`), drawn at random with the project's seed and
        `seed`, for a head that learns from the pool. Hold-out images are never among them, not
        even unlabeled."""
        cache = self.cache_for(backbone)
        taken = {int(i) for i in labeled_ids}
        # The candidates as one int64 array of ids, read a chunk of hashes at a time: each
        # content once, at its first unlabeled copy, in id order (the order the draw depends on).
        # Their hashes are kept too while they are few enough to be returned all (`limit`).
        copied = {i["hash"] for i in self.store.duplicate_images(self.id)}
        seen: set[str] = set()
        kept, hashes = [], []
        for rows in self.store.iter_images(self.id, split="pool", chunk=PREPARE_CHUNK,
                                           columns=["hash"]):
            first = first_copies((i for i in rows if i["id"] not in taken), copied, seen)
            missing = set(cache.missing(list(first)))   # added since, not embedded yet: left out
            first = {h: i for h, i in first.items() if h not in missing}
            kept.append(np.fromiter(first.values(), dtype=np.int64, count=len(first)))
            if hashes is not None and len(hashes) + len(first) <= limit:
                hashes.extend(first)
            else:
                hashes = None
        if hashes is None:    # more than `limit`: draw them, then read the drawn ones' hashes
            ids = np.concatenate(kept)
            rng = np.random.default_rng([self.settings.seed, seed, 11])
            ids = ids[np.sort(rng.choice(len(ids), limit, replace=False))]
            by_id = self.store.image_hashes(self.id, ids)
            hashes = [by_id[i] for i in ids]
        return cache.get(hashes) if hashes else np.zeros((0, 0), np.float32)

    def embedded_backbones(self) -> list[str]:
        """The registered backbones and feature options under which every image of the project
        that is not skipped is cached (the project's own first): those a study can compare."""
        from models.backbones import BACKBONES

        names = [self.settings.backbone] + [b for b in BACKBONES if b != self.settings.backbone]
        # A chunk of hashes at a time; a backbone drops out at its first missing one.
        for rows in self.store.iter_images(self.id, chunk=PREPARE_CHUNK, columns=["hash"]):
            hashes = [i["hash"] for i in rows]
            names = [b for b in names if not self.cache_for(b).missing(hashes)]
            if not names:
                break
        return names

    def embeddings_of(self, images: Sequence[dict], backbone: str | None = None) -> np.ndarray:
        """Cached embeddings of `images` (store rows) under `backbone` (default the project's)."""
        return self.cache_for(backbone).get([i["hash"] for i in images])

    def view_embeddings(self, image_ids: Sequence[int], backbone: str | None = None) -> np.ndarray:
        """(augment_views, N, D): embeddings of the augmented views of pool images `image_ids`,
        embedded on first use (a few per new label) and cached beside the images' own, under
        "<backbone>@views" keyed "<content hash>:<view>"."""
        from models.augment import view_embedder
        from models.extract import embed_files

        n_views = self.settings.augment_views
        rows = {i: r for i, r in self.store.images_by_id(self.id, image_ids).items()   # those only
                if r["split"] == "pool" and r["status"] == "ok"}
        bad = [int(i) for i in image_ids if int(i) not in rows]
        if bad:
            raise ProjectError(f"image id {bad[0]} is not a usable training-pool image of this "
                               "project: only those have augmented views")
        images = [rows[int(i)] for i in image_ids]
        key = backbone or self.features_key   # views of a tuned backbone are its own, not the base's
        name = f"{key}@views"
        if self._views is None or self._views.directory != Path(self.paths.cache) / name:
            self._views = EmbeddingCache(self.paths.cache, name)
        cache = self._views
        keys = [[f"{i['hash']}:{v}" for i in images] for v in range(n_views)]
        absent = set(cache.missing([k for view in keys for k in view]))
        missing = sorted({j for view in keys for j, k in enumerate(view) if k in absent})
        if missing:
            network = self.network(key)
            for batch in embed_files([self.root / images[j]["path"] for j in missing],
                                     view_embedder(network.embed, n_views), network.image_size,
                                     max_pixels=int(self.settings.max_megapixels * 1e6),
                                     max_bytes=int(self.settings.max_file_mb * 2**20)):
                if batch.failures:     # it embedded before: the file changed since
                    j, reason = next(iter(batch.failures.items()))
                    raise ProjectError(f"image '{images[missing[j]]['path']}' can no longer "
                                       f"be read for its augmented views: {reason}")
                per_view = batch.embeddings.reshape(len(batch.indices), n_views, -1)
                for v in range(n_views):
                    cache.add([keys[v][missing[j]] for j in batch.indices], per_view[:, v])
        return np.stack([cache.get(keys[v]) for v in range(n_views)]) if len(images) else \
            np.zeros((n_views, 0, 0), np.float32)

    # -- heads ------------------------------------------------------------------------------

    def current_head(self):
        """(the newest published head, its version row), or (None, None) before the first."""
        version = self.store.latest_model_version(self.id)
        if version is None:
            return None, None
        return load_head(version["weights_path"]), version

    def new_head(self, seed: int | None = None):
        """An untrained head with this project's head settings (HeadSettings names SoftmaxHead's
        hyper-parameters one for one) and its seed, or `seed`."""
        from models.heads import SoftmaxHead

        return SoftmaxHead(len(self.class_names), seed=self.settings.seed if seed is None else seed,
                           **dataclasses.asdict(self.settings.head))

    def retrain(self, previous=None, owner: str | None = None, force: bool = False,
                adopt: dict | None = None) -> dict | None:
        """Train a new head on every current training label (warm-started from `previous` or the
        newest version), score it on the hold-out set, and publish both in one transaction.

        Only the holder of the project's training lease publishes: `owner` is the trainer's
        name; without one this call takes the lease itself for the length of the retrain. A head
        that saw no more labels than the newest version is discarded as stale (with `force`, one
        that saw as many is published). Returns the new version row (with "head" and
        "evaluation"), or None: fewer than 2 classes labeled, the lease held by another trainer,
        or a stale result.

        `adopt`: a finished fine-tuning job's row (loop.tuning): the head trains on its
        backbone's embeddings, and the job becomes the project's backbone in the transaction that
        publishes this head, so the features and the newest head never disagree."""
        own_lease = owner is None
        if own_lease:
            owner = owner_name("retrain")
            if not self.store.acquire_training(self.id, owner, seconds=300):
                return None
        try:
            last_event = self.store.last_event_id(self.id)
            key = adopt["key"] if adopt else self.features_key
            ids, X, y = self.labeled("pool", up_to_event=last_event, backbone=key)
            if len(np.unique(y)) < 2:
                return None
            newest = self.store.latest_model_version(self.id)
            if newest is not None and newest["backbone"] != key:
                previous = None     # trained on other features (before a fine-tuning): start afresh
            elif previous is None:
                previous, _ = self.current_head()
            head = self.new_head()
            started = time.perf_counter()
            unlabeled = (self.unlabeled_pool(ids, head.spread_max_unlabeled, seed=len(ids), backbone=key)
                         if head.wants_unlabeled(y) else None)
            if self.settings.augment_views:   # the views train the head; the counts stay labels
                views = self.view_embeddings(ids, backbone=key)
                head.fit(np.concatenate([X, *views]), np.concatenate([y] * (len(views) + 1)),
                         warm_start=previous, unlabeled=unlabeled)
            else:
                head.fit(X, y, warm_start=previous, unlabeled=unlabeled)
            train_seconds = time.perf_counter() - started
            counts = {self.class_names[c]: int(n) for c, n in zip(*np.unique(y, return_counts=True))}
            n_auto = len(set(self.store.current_labels(self.id, "pool", last_event, source="auto")))
            folder = self.paths.heads(self.name)
            staged = head.save(folder / f"{uuid.uuid4().hex}.tmp.npz")
            evaluation = self.evaluate(head, len(y), backbone=key)
            with self.store.transaction():
                version = self.store.publish_version(
                    self.id, owner, staged,
                    {"n_labels": len(y), "last_event_id": last_event, "class_counts": counts,
                     "train_seconds": train_seconds, "backbone": key, "n_auto": n_auto},
                    evaluation=evaluation and {k: evaluation[k] for k in ("summary", "image_ids",
                                                                          "true_class_ids", "probabilities")},
                    train_ids=ids, force=force or adopt is not None)
                if adopt is not None and version is not None:
                    self.store.update_tuning(adopt["id"], adopt["owner"], status="adopted",
                                             finished_at=time.time())
        finally:
            if own_lease:
                self.store.release_training(self.id, owner)
        if version is None:
            return None
        _remember_head(version["weights_path"], head)
        version["head"] = head
        version["evaluation"] = None
        if evaluation is not None:
            version["evaluation"] = {**evaluation["summary"], "id": version["evaluation_id"]}
        return version

    def stored_settings(self) -> Settings:
        """The settings as stored now (`self.settings` is as this object last read or wrote them;
        another process may have changed them since)."""
        return Settings.from_json(self.store.project(self.id)["settings"])

    def update_settings(self, changes: dict | None = None, **more) -> Settings:
        """Change project settings (validated), e.g. `update_settings(strategy="hybrid")` or
        `update_settings({"head.dropout": 0.1})`; applied to the settings as stored now, so a
        change made meanwhile by another process is kept."""
        self.settings = self.stored_settings().with_changes({**(changes or {}), **more})
        self.store.update_settings(self.id, self.settings.to_json())
        return self.settings

    def evaluate(self, head, n_labels: int, backbone: str | None = None) -> dict | None:
        """Score `head` (trained on the embeddings of `backbone`, default what heads train on now)
        on the labeled hold-out images: {"summary", "image_ids", "true_class_ids",
        "probabilities"}, or None while the hold-out set has no labels."""
        ids, X, y = self.labeled("holdout", backbone=backbone)
        if not len(ids):
            return None
        probs = head.predict_proba(X)
        summary = evaluate(y, probs, self.class_names)
        summary["n_labels"] = n_labels
        return {"summary": summary, "image_ids": ids, "probabilities": probs,
                "true_class_ids": [self.class_rows[c]["id"] for c in y]}

    def score(self, head, version: dict) -> dict | None:
        """Evaluate `head` on the hold-out set and store it as `version`'s evaluation."""
        result = self.evaluate(head, version["n_labels"], backbone=version.get("backbone"))
        if result is None:
            return None
        summary = result["summary"]
        summary["id"] = self.store.add_evaluation(self.id, version["id"], summary, result["image_ids"],
                                                  result["true_class_ids"], result["probabilities"])
        return summary

    def recover(self) -> dict:
        """Mend what a killed process left behind (run by the trainer that holds the training
        lease, when it starts): stray staged weights (`*.tmp.npz`) and weights no version row
        names are removed; a version stored without its evaluation is scored now."""
        folder = self.paths.heads(self.name)
        removed = []
        if folder.exists():
            known = {str(Path(p).resolve()) for p in self.store.weights_paths() if p}
            for path in folder.iterdir():
                if path.name.endswith(".tmp.npz") or (path.suffix == ".npz"
                                                      and str(path.resolve()) not in known):
                    path.unlink(missing_ok=True)
                    removed.append(path.name)
        scored = []
        for version in self.store.versions_without_evaluation(self.id):
            if not Path(version["weights_path"]).exists():
                continue
            if self.score(load_head(version["weights_path"]), version) is not None:
                scored.append(version["version"])
        if removed or scored:
            self.store.log(self.id, "recovered", f"removed {len(removed)} stray weights file(s); "
                           f"scored version(s) {scored or 'none'} that had no evaluation")
        return {"removed": removed, "scored": scored}

    def figures(self) -> dict:
        """What the pages show of the project now, all from one read of the store: labels in
        force in the training pool by people (seeds, answers, reviews) and auto-accepted, hold-out
        labels, unlabeled images, and the newest scored model version with its hold-out scores."""
        with self.store.snapshot():
            pool = self.store.current_labels(self.id, split="pool")
            auto = self.store.current_labels(self.id, split="pool", source="auto")
            holdout = self.store.current_labels(self.id, split="holdout")
            unlabeled = self.store.unlabeled_count(self.id)
            latest = self.store.latest_model_version(self.id)
            evaluations = self.store.evaluations(self.id)
        scored = evaluations[-1] if evaluations else None
        return {"people": len(pool) - len(auto), "auto": len(auto), "holdout": len(holdout),
                "unlabeled": unlabeled, "versions": latest["version"] if latest else 0,
                "version": scored["version"] if scored else None,
                "trained_on": scored["n_labels"] if scored else None,
                "accuracy": scored["accuracy"] if scored else None,
                "balanced_accuracy": scored["balanced_accuracy"] if scored else None,
                "n_holdout": scored["n_holdout"] if scored else None}

    def status(self) -> dict:
        """Counts of the project's images and labels, the files skipped and why, groups of files
        that are byte-for-byte copies of each other ("duplicates": kept, and always put in the
        same split, so a copy never scores the model on an image it trained on), and those groups
        whose copies sit in different class folders ("conflicts", one line each naming every file
        and its folder class: kept out of the hold-out, as their truth is ambiguous)."""
        # Counted and grouped by the database, in one read: the rows read are the few images
        # that have copies (and the skipped ones), never every image.
        with self.store.snapshot():
            splits = self.store.split_counts(self.id)
            labeled = self.store.labeled_counts(self.id)
            groups = list(copy_groups(self.store.duplicate_images(self.id)).values())
            skipped = self.store.skipped_images(self.id)
            versions = len(self.store.model_versions(self.id))
            evaluations = self.store.evaluations(self.id)
            backbone = self.features_key
        name_of = {c["id"]: c["name"] for c in self.class_rows}
        conflicts = []
        for group in groups:
            if len(known_classes(group)) > 1:
                line = " = ".join(f"{i['path']} ({name_of.get(i['known_class_id'], 'no class')})"
                                  for i in group)
                if any(i["split"] == "holdout" for i in group):   # drawn before conflicts were kept out
                    line += ": in the hold-out"
                conflicts.append(line)
        return {
            "project": self.name, "root": str(self.root), "backbone": backbone,
            "classes": self.class_names, "images": sum(splits.values()),
            "pool": splits.get("pool", 0), "holdout": splits.get("holdout", 0),
            "skipped": [(i["path"], i["reason"]) for i in skipped],
            "duplicates": [[i["path"] for i in group] for group in groups],
            "conflicts": conflicts,
            "labeled_pool": labeled.get("pool", 0), "labeled_holdout": labeled.get("holdout", 0),
            "model_versions": versions,
            "accuracy": evaluations[-1]["accuracy"] if evaluations else None,
        }


def import_unfinished(store: Store, project_id: int) -> bool:
    """Whether the project's folder import started and has not finished (it is running, or it
    was stopped: `create_project` with the same name, folder and classes finishes it)."""
    return (bool(store.log_entries(project_id, "import", limit=1))
            and not store.log_entries(project_id, "imported", limit=1))


def _start_import(store: Store, name: str, root: Path, classes: list[str], settings: Settings
                  ) -> tuple[int, Settings, set[str]]:
    """(project id, its settings, the paths it holds already): a new project, stored with its
    classes and an "import" mark in one transaction, or the project `name` whose import of the
    same folder into the same classes stopped before its end."""
    try:
        row = store.project(name)
    except StoreError:
        row = None
    if row is not None and import_unfinished(store, row["id"]):
        stored_classes = [c["name"] for c in store.classes(row["id"])]
        if row["root"] != str(root) or stored_classes != classes:
            raise ProjectError(f"project '{name}' has an unfinished import of folder '{row['root']}' "
                               f"into the classes {', '.join(stored_classes)}; give that folder and "
                               "those classes to finish it, or choose another name")
        return (row["id"], Settings.from_json(row["settings"]),
                {i["path"] for i in store.images(row["id"], status=None)})
    with store.transaction():   # the project and its import mark, or neither
        project_id = store.create_project(name, str(root), settings.to_json(), classes)
        store.log(project_id, "import", f"importing the image files of folder '{root}'")
    return project_id, settings, set()


def import_folder(store: Store, name: str, folder: str | Path,
                  class_names: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Register every image file under `folder` as an image of a new project `name` (hashing
    each), without embedding; returns the project's id. With `class_names`, a flat folder of
    unlabeled images; without, one sub-folder per class. Files that cannot be read are kept as
    skipped, with their reason.

    The folder is read as a stream and stored IMPORT_CHUNK files per transaction, so a folder of
    a million files is never in memory at once, nor holds the write lock for long. An import that
    stopped (killed, a full disk) is finished by calling this again with the same name, folder
    and classes: the files stored already are not read again."""
    from loop.paths import UnsafeNameError, check_name

    for class_name in class_names or ():
        try:
            check_name(class_name, "class name")
        except UnsafeNameError as exc:
            raise ProjectError(str(exc)) from None
    labeled = class_names is None
    root, found_classes = folder_classes(folder, labeled)
    classes = found_classes if labeled else list(dict.fromkeys(class_names))
    entries = walk_folder(root, found_classes)
    first = next(entries, None)
    if first is None:           # refused before anything is stored
        raise ProjectError(_no_images(root))
    entries = itertools.chain([first], entries)
    try:
        project_id, settings, stored = _start_import(store, name, root, classes,
                                                     settings or Settings())
        class_ids = {c["name"]: c["id"] for c in store.classes(project_id)}
        max_bytes = int(settings.max_file_mb * 2**20)
        count = skipped = 0
        while chunk := list(itertools.islice(entries, IMPORT_CHUNK)):
            rows = []
            for relative, label, reason in chunk:
                if relative in stored:
                    continue
                row = {"path": relative, "split": "pool", "hash": "", "status": "ok",
                       "reason": None, "known_class_id": class_ids[label] if label else None}
                if reason is None:
                    try:
                        row["hash"] = file_hash(root / relative, max_bytes=max_bytes)
                    except ImageError as exc:
                        reason = str(exc)
                if reason is not None:
                    row.update(status="skipped", reason=reason)
                    skipped += 1
                rows.append(row)
            if rows:
                store.add_images(project_id, rows)    # one transaction per chunk
                count += len(rows)
        store.log(project_id, "imported", f"{count:,} image files of folder '{root}' stored "
                                          f"({skipped:,} skipped)")
    except StoreError as exc:
        raise ProjectError(str(exc)) from None
    return project_id


def create_project(store: Store, name: str, folder: str | Path, paths: Paths,
                   class_names: Sequence[str] | None = None, settings: Settings | None = None,
                   on_progress: Progress | None = None) -> Project:
    """Register every image under `folder` (`import_folder`: streamed, hashed, stored in chunks;
    called again, it finishes a stopped import), then embed, draw the hold-out set and the seed
    labels. Files that cannot be read are kept as skipped, with their reason."""
    import_folder(store, name, folder, class_names, settings)
    project = Project(store, name, paths)
    project.prepare(on_progress)
    return project


def open_or_create_dataset_project(spec: str, paths: Paths, name: str | None = None,
                                   settings: Settings | None = None,
                                   on_progress: Progress | None = None,
                                   data_dir: str | Path | None = None) -> Project:
    """The project for a named dataset (see loop.datasets; written out under `data_dir`, default
    the data root) or a labeled folder, created on first use and reopened afterwards."""
    from loop.datasets import DATASETS, resolve

    folder = resolve(spec, data_dir or paths.root)
    if name is None:
        name = (spec.replace(":", "-") if spec.partition(":")[0] in DATASETS
                else folder.resolve().name.replace(" ", "_"))
    store = Store(paths.database)
    try:
        row = store.project(name)
    except StoreError:
        row = None
    if row is None or import_unfinished(store, row["id"]):   # new, or the rest of a stopped import
        return create_project(store, name, folder, paths, settings=settings, on_progress=on_progress)
    project = Project(store, name, paths)
    project.prepare(on_progress)
    return project
