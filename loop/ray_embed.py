"""Embedding many images on a Ray cluster, into the same on-disk cache the loop reads.

A Ray Data pipeline: a table of (content hash, path) for the images the cache lacks; a decode
stage on CPU tasks (`models.images.load_image`, the decode `fill_cache` uses); the backbone in an
actor pool (`map_batches` with a callable class, so each actor loads the Keras network once and
keeps it; one GPU per actor when the cluster has GPUs); the vectors come back to this process,
which writes them as cache shards every `shard_size` images (`EmbeddingCache.add`: atomic
shards, so a killed run keeps whole shards and the next run embeds only what is missing).

    with ray_session():          # the running session, a local instance, or address="auto"
        failures = embed_with_ray(cache, [(content_hash, path), ...], "efficientnet-lite0")

`embed_project` and `embed_folder` (what `python -m loop embed` runs) take either engine:
"local" (this process, `fill_cache`) or "ray". Ray is imported here only, and only when the
Ray engine runs: nothing else in the project needs it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from loop.embeddings import EmbeddingCache

REPO = Path(__file__).resolve().parent.parent
# Rows per input block, the unit a decode task takes and results come back in: 128 images at
# 260 px are 26 MB decoded (under Ray Data's 128 MB target block size); a million images make
# 7,800 blocks to spread, and progress reaches the cache every few seconds.
BLOCK_ROWS = 128
# A decode task asks for half a core. Ray fuses consecutive map stages whose resource requests are
# equal, which would run decode inside the backbone actor, one batch after the other; apart, the
# next batches decode while the model runs (on 2 cores: 49-57 images/s against 43-49 fused, steady
# state), and two decode tasks share a core, as each waits on its file reads part of the time.
DECODE_CPUS = 0.5


def _require_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError("the Ray engine needs Ray Data: pip install 'ray[data]==2.60.0' "
                          "(or use --engine local)") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[object]:
    """Ray, connected: the running session if there is one, else `address` ("auto": the cluster
    this machine belongs to), else a local instance with `num_cpus` (default: every core) that
    is shut down on leaving. A local instance's workers import this repository's modules."""
    ray = _require_ray()
    if ray.is_initialized():
        yield ray
        return
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    if address:
        ray.init(address=address, runtime_env={"env_vars": env})
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env})
    try:
        yield ray
    finally:
        ray.shutdown()


def decode_batch(batch: dict[str, np.ndarray], size: int, max_pixels: int | None,
                 max_bytes: int | None) -> dict[str, np.ndarray]:
    """The decode stage: {"hash", "path"} -> {"hash", "error", "image"}. A file that cannot be
    decoded keeps its row, with the reason in "error" and a blank image, so the reason reaches
    the driver (Ray Data columns are rectangular: every row carries an image)."""
    from models.images import ImageError, load_image

    images = np.zeros((len(batch["path"]), size, size, 3), np.uint8)
    errors = []
    for k, path in enumerate(batch["path"]):
        try:
            images[k] = load_image(str(path), size, max_pixels, max_bytes)
            errors.append("")
        except ImageError as exc:
            errors.append(str(exc))
    return {"hash": batch["hash"], "error": np.array(errors, dtype=object), "image": images}


class BackboneActor:
    """The embed stage, one per Ray actor: the Keras backbone is built and its weights loaded once,
    in the constructor, and then runs every batch the actor is given (a plain function would load
    the network again for every task)."""

    def __init__(self, backbone: str):
        from models.backbones import load_backbone

        self.network = load_backbone(backbone)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        vectors = np.zeros((len(ok), self.network.embedding_dim), np.float32)
        if ok.any():
            vectors[ok] = self.network.embed(batch["image"][ok])
        return {"hash": batch["hash"], "error": batch["error"], "embedding": vectors}


def actor_plan(resources: dict, actors: int | None = None) -> dict:
    """How many backbone actors, and what each asks for, on a cluster with `resources`
    (`ray.cluster_resources()`): one per GPU where there are GPUs; on CPUs only, one per 8 cores
    (TensorFlow spreads one forward pass over every core of its machine already, so more
    actors would fight over the cores that decode needs), at least one.

    >>> actor_plan({"CPU": 2.0})
    {'actors': 1, 'num_gpus': 0, 'num_cpus': 1}
    >>> actor_plan({"CPU": 64.0, "GPU": 4.0})
    {'actors': 4, 'num_gpus': 1, 'num_cpus': 1}
    """
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    if actors is None:
        actors = gpus or max(1, cpus // 8)
    return {"actors": int(actors), "num_gpus": 1 if gpus else 0, "num_cpus": 1}


def embed_with_ray(cache: EmbeddingCache, items: Sequence[tuple[str, str | Path]], backbone: str,
                   batch_size: int | None = None, shard_size: int = 1024,
                   actors: int | None = None, on_progress: Callable[[int, int], None] | None = None,
                   max_pixels: int | None = None, max_bytes: int | None = None) -> dict[str, str]:
    """`loop.embeddings.fill_cache` on Ray: embed the (hash, path) items whose hash `cache` lacks
    with the registered `backbone`, and return {hash: reason} for the files that could not be
    decoded or are over `max_pixels` or `max_bytes`. Uses the running Ray session (see
    `ray_session`); the vectors equal the single-process path's (the same decode, preprocessing
    and network; batches differ only in which images share a forward pass)."""
    from models.backbones import BACKBONES
    from models.extract import BATCH_SIZE
    from models.images import MAX_PIXELS

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone '{backbone}'; known: {', '.join(BACKBONES)}")
    ray = _require_ray()
    if not ray.is_initialized():
        raise RuntimeError("embed_with_ray needs a Ray session: call it inside "
                           "`with ray_session(): ...`")
    import pyarrow as pa

    wanted = set(cache.missing([h for h, _ in items]))
    todo = {h: str(p) for h, p in items if h in wanted}   # one path per content: copies once
    if not todo:
        return {}
    table = pa.table({"hash": list(todo), "path": list(todo.values())})
    del todo
    blocks = [table.slice(start, BLOCK_ROWS) for start in range(0, table.num_rows, BLOCK_ROWS)]
    total = table.num_rows
    plan = actor_plan(ray.cluster_resources(), actors)
    batch_size = batch_size or BATCH_SIZE
    decode_options = {"size": BACKBONES[backbone].image_size, "max_bytes": max_bytes,
                      "max_pixels": MAX_PIXELS if max_pixels is None else max_pixels}
    dataset = (ray.data.from_arrow(blocks)
               .map_batches(decode_batch, batch_size=batch_size, batch_format="numpy",
                            num_cpus=DECODE_CPUS, fn_kwargs=decode_options)
               .map_batches(BackboneActor, batch_size=batch_size, batch_format="numpy",
                            fn_constructor_kwargs={"backbone": backbone},
                            compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
                            num_gpus=plan["num_gpus"], num_cpus=plan["num_cpus"]))
    failures: dict[str, str] = {}
    pending_hashes: list[str] = []
    pending_vectors: list[np.ndarray] = []
    done = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        failures.update((str(h), str(e)) for h, e in zip(batch["hash"][~ok], batch["error"][~ok]))
        pending_hashes.extend(str(h) for h in batch["hash"][ok])
        pending_vectors.append(np.asarray(batch["embedding"][ok], np.float32))
        done += len(ok)
        if len(pending_hashes) >= shard_size:
            cache.add(pending_hashes, np.concatenate(pending_vectors))
            pending_hashes, pending_vectors = [], []
        if on_progress:
            on_progress(done, total)
    if pending_hashes:
        cache.add(pending_hashes, np.concatenate(pending_vectors))
    return failures


ENGINES = ("local", "ray")


def embed_items(cache: EmbeddingCache, items: Sequence[tuple[str, str | Path]], backbone: str,
                engine: str = "local", actors: int | None = None, address: str | None = None,
                on_progress: Callable[[int, int], None] | None = None,
                max_pixels: int | None = None, max_bytes: int | None = None) -> dict:
    """Embed what `cache` lacks of the (hash, path) `items` with `engine`: "local" (this process,
    `fill_cache`) or "ray" (`embed_with_ray`, in the running Ray session, else on `address`, else
    on a local instance). Returns {"images": distinct contents, "cached": already there,
    "embedded", "failures": {hash: reason}, "seconds", "engine"}."""
    import time

    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}")
    hashes = list(dict.fromkeys(h for h, _ in items))
    missing = len(cache.missing(hashes))
    started = time.perf_counter()
    if not missing:
        failures = {}
    elif engine == "local":
        from loop.embeddings import fill_cache
        from models.backbones import load_backbone

        network = load_backbone(backbone)
        failures = fill_cache(cache, items, network.embed, network.image_size,
                              on_progress=on_progress, max_pixels=max_pixels, max_bytes=max_bytes)
    else:
        with ray_session(address):
            failures = embed_with_ray(cache, items, backbone, actors=actors,
                                      on_progress=on_progress, max_pixels=max_pixels,
                                      max_bytes=max_bytes)
    return {"images": len(hashes), "cached": len(hashes) - missing,
            "embedded": missing - len(failures), "failures": failures,
            "seconds": time.perf_counter() - started, "engine": engine}


def embed_project(project, backbone: str | None = None, engine: str = "ray",
                  actors: int | None = None, address: str | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> dict:
    """`Project.embed` with a choice of engine: embed every image of `project` that the cache of
    `backbone` (default the project's) lacks, within the project's size limits, and mark the
    files that cannot be decoded skipped, with the reason. Returns `embed_items`' summary over
    the whole project, with "skipped": [(path, reason)]. A registered backbone only: a
    fine-tuned one (loop.tuning) re-embeds in its own job, and `Project.embed` embeds images
    added after it.

    The images are read `loop.project.PREPARE_CHUNK` rows at a time and embedded a chunk at a
    time (one Ray session for them all), the progress counting over the whole project; a file
    that failed is not decoded again for its copies in later chunks."""
    import time

    import loop.project
    from loop.project import first_copies

    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}")
    store, chunk = project.store, loop.project.PREPARE_CHUNK
    backbone = backbone or project.settings.backbone
    cache = project.cache_for(backbone)
    limits = {"max_pixels": int(project.settings.max_megapixels * 1e6),
              "max_bytes": int(project.settings.max_file_mb * 2**20)}
    # A first pass counts the contents and those missing, chunk by chunk, each content once
    # (only hashes with copies are remembered across chunks): the summary and the progress total.
    # A content with copies is decoded from its last copy, as when every (hash, path) went to
    # the engine at once (so a failure's reason names the same file).
    last_copy = {i["hash"]: i["path"] for i in store.duplicate_images(project.id)}
    copied = set(last_copy)
    seen: set[str] = set()
    contents, planned = 0, []
    for rows in store.iter_images(project.id, chunk=chunk, columns=["hash"]):
        hashes = list(first_copies(rows, copied, seen))
        contents += len(hashes)
        planned.append(len(cache.missing(hashes)))
    total = sum(planned)
    summary = {"images": contents, "cached": contents - total, "embedded": 0, "failures": {},
               "seconds": 0.0, "engine": engine, "skipped": []}
    if not total:                  # nothing missing: no Ray session started, no network loaded
        return summary
    started = time.perf_counter()
    failures = summary["failures"]
    reported = 0

    def report(done: int) -> None:
        nonlocal reported
        if on_progress and done > reported:
            reported = done
            on_progress(done, total)

    with ray_session(address) if engine == "ray" else contextlib.nullcontext():
        done = 0              # images of the chunks before this one, as counted in the first pass
        for k, rows in enumerate(store.iter_images(project.id, chunk=chunk, columns=["hash", "path"])):
            items = [(i["hash"], project.root / last_copy.get(i["hash"], i["path"])) for i in rows
                     if i["hash"] not in failures]
            failures.update(embed_items(
                cache, items, backbone, engine, actors, address,
                lambda finished, _chunk_total, base=done: report(min(base + finished, total)),
                **limits)["failures"])
            for image in rows:    # every copy of a file that failed, in this chunk or before
                if image["hash"] in failures:
                    store.skip_image(image["id"], failures[image["hash"]])
                    summary["skipped"].append((image["path"], failures[image["hash"]]))
            # A chunk's share of the total as the first pass counted it (its last progress
            # report may fall short of it when files failed to decode).
            done = min(done + (planned[k] if k < len(planned) else 0), total)
            report(done)
    summary.update(embedded=total - len(failures), seconds=time.perf_counter() - started)
    return summary


def embed_folder(folder: str | Path, cache: EmbeddingCache, backbone: str, engine: str = "ray",
                 actors: int | None = None, address: str | None = None,
                 on_progress: Callable[[int, int], None] | None = None,
                 max_pixels: int | None = None, max_bytes: int | None = None) -> dict:
    """Embed every image file under `folder` (sub-folders too) into `cache`, keyed by content
    hash as a project's would be, so a project made of that folder later finds them cached.
    Returns `embed_items`' summary, with "skipped": [(path relative to folder, reason)]."""
    from loop.project import folder_classes, walk_folder
    from models.images import ImageError, file_hash

    root, _ = folder_classes(folder, labeled=False)
    items, skipped = [], []
    for relative, _, reason in walk_folder(root):
        if reason is None:
            try:
                items.append((file_hash(root / relative, max_bytes=max_bytes), root / relative))
                continue
            except ImageError as exc:
                reason = str(exc)
        skipped.append((relative, reason))
    summary = embed_items(cache, items, backbone, engine, actors, address, on_progress,
                          max_pixels, max_bytes)
    paths_of: dict[str, list[str]] = {}
    for h, path in items:
        paths_of.setdefault(h, []).append(Path(path).relative_to(root).as_posix())
    skipped += [(p, reason) for h, reason in summary["failures"].items() for p in paths_of[h]]
    summary["skipped"] = skipped
    return summary
