"""The on-disk embedding cache: each image is embedded once per backbone, keyed by content hash.

Vectors live in append-only shard files (`<dir>/<backbone>/<shard>.npy`, memory-mapped when read)
with their hashes beside them (`<shard>.hashes`). A shard is written to a temporary name and
renamed, so a crash leaves whole shards only, and several processes can add shards at once.
Because the key is the content, the cache can be shared by every project on a machine.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


class EmbeddingCache:
    """Content-hash -> embedding for one backbone.

    >>> import tempfile; cache = EmbeddingCache(tempfile.mkdtemp(), "toy")
    >>> cache.add(["aa", "bb"], np.eye(2, dtype="float32"))
    >>> cache.get(["bb"]).tolist()
    [[0.0, 1.0]]
    """

    def __init__(self, directory: str | Path, backbone: str):
        self.directory = Path(directory) / backbone
        self.backbone = backbone
        self._lock = threading.Lock()
        self._index: dict[str, tuple[int, int]] = {}
        self._shards: list[np.ndarray] = []
        self._seen: set[str] = set()

    def _refresh(self) -> None:
        """Pick up shards written since the last look (by this or another process)."""
        if not self.directory.exists():
            return
        for hashes_file in sorted(self.directory.glob("*.hashes")):
            if hashes_file.name in self._seen:
                continue
            vectors_file = hashes_file.with_suffix(".npy")
            if not vectors_file.exists():
                continue  # its writer has not finished
            vectors = np.load(vectors_file, mmap_mode="r")
            hashes = hashes_file.read_text().split()
            shard = len(self._shards)
            self._shards.append(vectors)
            for row, key in enumerate(hashes):
                self._index.setdefault(key, (shard, row))
            self._seen.add(hashes_file.name)

    def all(self) -> np.ndarray:
        """Every cached embedding of this backbone, (n, d) float32, in shard order (a copy: for
        benchmarks over real embeddings, not for a project's images, which `get` reads by hash)."""
        with self._lock:
            self._refresh()
            if not self._shards:
                return np.zeros((0, 0), np.float32)
            return np.concatenate([np.asarray(s, dtype=np.float32) for s in self._shards])

    def __contains__(self, key: str) -> bool:
        return not self.missing([key])

    def missing(self, hashes: Sequence[str]) -> list[str]:
        with self._lock:
            self._refresh()
            return [h for h in dict.fromkeys(hashes) if h not in self._index]

    def get(self, hashes: Sequence[str]) -> np.ndarray:
        """The (n, d) float32 embeddings of `hashes`, in order; KeyError names a missing one."""
        with self._lock:
            self._refresh()
            try:
                places = [self._index[h] for h in hashes]
            except KeyError as exc:
                raise KeyError(f"no cached {self.backbone} embedding for image hash {exc.args[0]}; "
                               "embed the project's images first") from None
            if not places:
                return np.zeros((0, 0), np.float32)
            return np.stack([self._shards[s][r] for s, r in places]).astype(np.float32)

    def add(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Write one shard atomically: vectors first, then the hash list that makes it visible."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(hashes) != len(vectors):
            raise ValueError(f"{len(hashes)} hashes for {len(vectors)} vectors")
        if not len(hashes):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = self.directory / f"{name}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, vectors)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.directory / f"{name}.npy")
        tmp = self.directory / f"{name}.hashes.tmp"
        tmp.write_text("\n".join(hashes) + "\n")
        tmp.replace(self.directory / f"{name}.hashes")


def fill_cache(cache: EmbeddingCache, items: Sequence[tuple[str, str | Path]],
               embed_batch: Callable[[np.ndarray], np.ndarray], image_size: int,
               batch_size: int | None = None, shard_size: int = 1024,
               on_progress: Callable[[int, int], None] | None = None,
               max_pixels: int | None = None, max_bytes: int | None = None) -> dict[str, str]:
    """Embed the (hash, path) items whose hash is not cached yet; returns {hash: reason} for the
    files that could not be decoded or are over `max_pixels` or `max_bytes` (default: the
    decoder's own pixel limit, no size limit). Progress is saved every `shard_size` images;
    `batch_size` images go through the model at once (default models.extract.BATCH_SIZE)."""
    from models.extract import BATCH_SIZE, embed_files
    from models.images import MAX_PIXELS

    if max_pixels is None:
        max_pixels = MAX_PIXELS

    wanted = set(cache.missing([h for h, _ in items]))
    todo = [(h, p) for h, p in dict(items).items() if h in wanted]
    failures: dict[str, str] = {}
    pending_hashes: list[str] = []
    pending_vectors: list[np.ndarray] = []
    for batch in embed_files([p for _, p in todo], embed_batch, image_size,
                             batch_size or BATCH_SIZE,
                             on_progress=on_progress, max_pixels=max_pixels, max_bytes=max_bytes):
        for index, reason in batch.failures.items():
            failures[todo[index][0]] = reason
        pending_hashes.extend(todo[i][0] for i in batch.indices)
        if len(batch.indices):
            pending_vectors.append(batch.embeddings)
        if len(pending_hashes) >= shard_size:
            cache.add(pending_hashes, np.concatenate(pending_vectors))
            pending_hashes, pending_vectors = [], []
    if pending_hashes:
        cache.add(pending_hashes, np.concatenate(pending_vectors))
    return failures
