"""Embedding on Ray (loop.ray_embed) gives the single-process embeddings, into the same cache, and
resumes where a stopped run left off; `python -m loop embed` drives either engine."""

import doctest
import shutil
import time

import numpy as np
import pytest

import loop.ray_embed
from loop.__main__ import main
from loop.datasets import materialize
from loop.embeddings import EmbeddingCache, fill_cache
import loop.project
from loop.project import Paths, Project, import_folder
from loop.store import Store
from models.images import file_hash

BACKBONE = "efficientnet-lite0"
PER_CLASS = 30          # 300 real images (the demo's animal silhouettes)
TOLERANCE = 1e-4        # max abs difference allowed between the two engines' vectors


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """300 demo images in 10 class folders, a byte-for-byte copy of one, and a truncated file."""
    from tests.conftest import SHARED_DATA

    source = materialize("demo", SHARED_DATA)
    root = tmp_path_factory.mktemp("ray") / "animals"
    for cls in sorted(p for p in source.iterdir() if p.is_dir()):
        (root / cls.name).mkdir(parents=True)
        for path in sorted(cls.glob("*.png"))[:PER_CLASS]:
            shutil.copy(path, root / cls.name / path.name)
    first = min((root / "Cat").glob("*.png"))
    shutil.copy(first, root / "Cow" / "copy-of-a-cat.png")
    data = first.read_bytes()
    (root / "Zebra" / "cut.png").write_bytes(data[: len(data) // 3])
    return root


@pytest.fixture(scope="module")
def single_process(folder, tmp_path_factory):
    """The reference: every file embedded by `fill_cache` in this process, as the loop does."""
    from models.backbones import load_backbone

    items = [(file_hash(p), p) for p in sorted(folder.glob("*/*.png"))]
    cache = EmbeddingCache(tmp_path_factory.mktemp("local"), BACKBONE)
    network = load_backbone(BACKBONE)
    failures = fill_cache(cache, items, network.embed, network.image_size)
    return cache, failures


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray.data", reason="Ray Data is not installed: "
                                           "pip install 'ray[data]==2.60.0'")
    with loop.ray_embed.ray_session(num_cpus=2) as ray:   # a local instance, stopped after
        yield ray


def shard_hashes(cache: EmbeddingCache) -> dict[str, list[str]]:
    return {f.name: f.read_text().split() for f in cache.directory.glob("*.hashes")}


@pytest.mark.slow
def test_ray_embeds_what_a_stopped_run_left_and_equals_the_single_process(
        folder, single_process, ray_cluster, tmp_path):
    local, local_failures = single_process
    paths = Paths(tmp_path / "data", cache_dir=tmp_path / "cache")
    store = Store(paths.database)
    import_folder(store, "animals", folder)                      # registered, not embedded
    project = Project(store, "animals", paths)
    hashes = list(dict.fromkeys(i["hash"] for i in store.images(project.id)))
    good = [h for h in hashes if h not in local_failures]
    assert len(good) == 10 * PER_CLASS and len(hashes) == len(good) + 1   # the copy: one content
    # A run killed halfway: every other image is in whole shards already.
    done = good[::2]
    project.cache.add(done, local.get(done))
    before = shard_hashes(project.cache)

    summary = loop.ray_embed.embed_project(project, engine="ray")
    assert summary["cached"] == len(done) and summary["embedded"] == len(good) - len(done)
    added = [h for name, hs in shard_hashes(project.cache).items() if name not in before for h in hs]
    assert sorted(added) == sorted(set(good) - set(done))        # only the missing half, once each
    difference = np.abs(project.cache.get(good) - local.get(good)).max()
    assert difference < TOLERANCE, difference
    assert summary["failures"] == local_failures                  # the same reason for the cut file
    assert [p for p, _ in summary["skipped"]] == ["Zebra/cut.png"]
    assert dict(project.status()["skipped"])["Zebra/cut.png"] == next(iter(local_failures.values()))

    # Run again: nothing is missing, so no dataset is even built and no shard written.
    after = shard_hashes(project.cache)
    started = time.perf_counter()
    again = loop.ray_embed.embed_project(project, engine="ray")
    assert again["embedded"] == 0 and again["cached"] == len(good)
    assert shard_hashes(project.cache) == after
    assert time.perf_counter() - started < 5


def embed_project_as_before(project, engine):
    """`embed_project` as it was: every image row and every (hash, path) item at once."""
    images = project.store.images(project.id)
    summary = loop.ray_embed.embed_items(
        project.cache, [(i["hash"], project.root / i["path"]) for i in images], BACKBONE, engine,
        max_pixels=int(project.settings.max_megapixels * 1e6),
        max_bytes=int(project.settings.max_file_mb * 2**20))
    summary["skipped"] = [(i["path"], summary["failures"][i["hash"]]) for i in images
                          if i["hash"] in summary["failures"]]
    for image in images:
        if image["hash"] in summary["failures"]:
            project.store.skip_image(image["id"], summary["failures"][image["hash"]])
    return summary


def test_a_project_embeds_a_chunk_at_a_time_as_it_did_all_at_once(tmp_path, shared_cache,
                                                                  monkeypatch):
    # 12 demo images, half of them cached already; a copy of a cached Cat and of an uncached one
    # in Zebra (later chunks), a truncated file in Cat and its copy in Zebra; 4 rows a chunk.
    from tests.conftest import SHARED_DATA

    source = materialize("demo", SHARED_DATA)
    root = tmp_path / "animals"
    for name in ("Cat", "Cow", "Zebra"):
        (root / name).mkdir(parents=True)
        for path in sorted((source / name).glob("*.png"))[:4]:
            shutil.copy(path, root / name / path.name)
    cats = sorted((root / "Cat").glob("*.png"))
    shutil.copy(cats[0], root / "Zebra" / "zz-copy-0.png")
    shutil.copy(cats[1], root / "Zebra" / "zz-copy-1.png")
    data = cats[2].read_bytes()
    (root / "Cat" / "0-cut.png").write_bytes(data[: len(data) // 3])
    shutil.copy(root / "Cat" / "0-cut.png", root / "Zebra" / "zz-cut.png")
    reference = EmbeddingCache(shared_cache, BACKBONE)
    projects = []
    for name in ("chunks", "whole"):
        paths = Paths(tmp_path / name, cache_dir=tmp_path / name / "cache")
        import_folder(Store(paths.database), "animals", root)
        project = Project(Store(paths.database), "animals", paths)
        hashes = list(dict.fromkeys(i["hash"] for i in project.store.images(project.id)))
        known = [h for h in hashes if h not in reference.missing(hashes)][::2]
        project.cache.add(known, reference.get(known))
        projects.append(project)
    chunks, whole = projects
    assert len(known) >= 4 and cats[0].name != "0-cut.png"

    monkeypatch.setattr(loop.project, "PREPARE_CHUNK", 4)
    handed, embed_items = [], loop.ray_embed.embed_items
    monkeypatch.setattr(loop.ray_embed, "embed_items", lambda cache, items, *a, **k: handed.append(
        [p.name for _, p in items]) or embed_items(cache, items, *a, **k))
    progress = []
    summary = loop.ray_embed.embed_project(chunks, engine="local",
                                           on_progress=lambda d, t: progress.append((d, t)))
    monkeypatch.setattr(loop.ray_embed, "embed_items", embed_items)
    before = embed_project_as_before(whole, "local")
    assert {k: v for k, v in summary.items() if k != "seconds"} == {
        k: v for k, v in before.items() if k != "seconds"}
    assert summary["images"] == 12 + 1 and summary["cached"] == len(known)
    assert [p for p, _ in summary["skipped"]] == ["Cat/0-cut.png", "Zebra/zz-cut.png"]
    assert chunks.status()["skipped"] == whole.status()["skipped"] == summary["skipped"]
    # 15 rows, 4 a chunk; the bad file handed to the engine once (from its last copy, as before).
    assert len(handed) == 4 and all(len(items) <= 4 for items in handed)
    assert sum(items.count("0-cut.png") + items.count("zz-cut.png") for items in handed) == 1
    total = summary["images"] - summary["cached"]
    assert progress[-1] == (total, total) and {t for _, t in progress} == {total}
    assert [d for d, _ in progress] == sorted({d for d, _ in progress})
    hashes = [h for h in dict.fromkeys(i["hash"] for i in chunks.store.images(chunks.id))]
    assert not chunks.cache.missing(hashes) and not whole.cache.missing(hashes)
    assert np.abs(chunks.cache.get(hashes) - whole.cache.get(hashes)).max() < TOLERANCE
    again = loop.ray_embed.embed_project(chunks, engine="local")
    assert (again["cached"], again["embedded"], again["skipped"]) == (12, 0, [])


def test_actor_plan_examples():
    result = doctest.testmod(loop.ray_embed)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.slow
def test_the_embed_command_on_a_folder(folder, single_process, tmp_path, capsys):
    local, local_failures = single_process
    data = tmp_path / "data"
    cache = EmbeddingCache(Paths(data).cache, BACKBONE)
    items = [(file_hash(p), p) for p in sorted(folder.glob("*/*.png"))]
    good = [h for h in dict.fromkeys(h for h, _ in items) if h not in local_failures]
    cache.add(good[:-5], local.get(good[:-5]))
    assert main(["--data", str(data), "embed", "--folder", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"{len(good) + 1} images: {len(good) - 5} cached already, 5 embedded" in out
    assert "engine local" in out and "Zebra/cut.png: image" in out and "1 skipped" in out
    assert not cache.missing(good)
    assert main(["--data", str(data), "embed"]) == 2
    assert "give a project NAME or --folder DIR" in capsys.readouterr().err
