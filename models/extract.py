"""Batched embedding extraction: decode and resize on worker threads while the backbone runs.

Pillow releases the GIL while it decodes and resizes, and the backbone releases it while it
computes, so a few threads keep the model fed on a small CPU.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.images import MAX_PIXELS, ImageError, load_image

# Images per forward pass. On 2 cores (bench/embed.py) batches of 32 ran 10-15% faster end to end
# than batches of 8 and no slower than 64; a batch of 32 at 260 px is 26 MB of float32 input.
BATCH_SIZE = 32


@dataclass
class EmbeddedBatch:
    """One batch's results: rows of `embeddings` belong to `indices` (positions in the input list);
    `failures` maps the positions that could not be decoded to the reason."""

    indices: list[int]
    embeddings: np.ndarray
    failures: dict[int, str]


def decoded_in_order(paths: Sequence[str | Path], size: int, workers: int | None = None,
                     prefetch: int = 256, max_pixels: int | None = MAX_PIXELS,
                     max_bytes: int | None = None
                     ) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """Yield (position, image or None, error or None) for each path, in input order, decoding up
    to `prefetch` images ahead on `workers` threads. Files over `max_bytes` or `max_pixels` are
    errors, refused before decoding; the full-size pixels in flight on all threads together stay
    within the process's `DECODE_BUDGET` (see models.images)."""
    workers = workers or min(4, (os.cpu_count() or 2) + 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        position = 0
        while position < len(paths) or pending:
            while position < len(paths) and len(pending) < prefetch:
                pending.append((position, pool.submit(load_image, paths[position], size,
                                                      max_pixels, max_bytes)))
                position += 1
            index, future = pending.popleft()
            try:
                yield index, future.result(), None
            except ImageError as exc:
                yield index, None, str(exc)


def embed_files(paths: Sequence[str | Path], embed: Callable[[np.ndarray], np.ndarray], size: int,
                batch_size: int = BATCH_SIZE, workers: int | None = None,
                on_progress: Callable[[int, int], None] | None = None,
                max_pixels: int | None = MAX_PIXELS, max_bytes: int | None = None
                ) -> Iterator[EmbeddedBatch]:
    """Embed `paths` with `embed` (a (N, size, size, 3) uint8 -> (N, D) function), batch by batch.

    Files that fail to decode, or are over `max_bytes` or `max_pixels`, are reported in the
    batch's `failures`, never raised.
    `on_progress(done, total)` is called after each batch.
    """
    images: list[np.ndarray] = []
    indices: list[int] = []
    failures: dict[int, str] = {}
    done = 0

    def flush() -> EmbeddedBatch:
        nonlocal images, indices, failures, done
        vectors = (np.asarray(embed(np.stack(images)), dtype=np.float32) if images
                   else np.zeros((0, 0), np.float32))
        batch = EmbeddedBatch(indices, vectors, failures)
        done += len(indices) + len(failures)
        images, indices, failures = [], [], {}
        if on_progress:
            on_progress(done, len(paths))
        return batch

    for index, image, error in decoded_in_order(paths, size, workers, prefetch=4 * batch_size,
                                                 max_pixels=max_pixels, max_bytes=max_bytes):
        if image is None:
            failures[index] = error
        else:
            images.append(image)
            indices.append(index)
        if len(images) == batch_size:
            yield flush()
    if images or failures:
        yield flush()
