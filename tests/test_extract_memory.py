"""The import's decode pipeline under size and pixel limits: refusals stay per-file reasons, and
several decode threads meeting several huge images stay within the decode budget."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loop.embeddings import EmbeddingCache, fill_cache
from models.extract import decoded_in_order, embed_files
from tests.test_images import PEAK_RSS_MB, png_header

REPO = Path(__file__).resolve().parent.parent


def mean_colour(batch):
    return batch.reshape(len(batch), -1, 3).mean(axis=1).astype(np.float32)


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (60, 40), (250, 0, 0)).save(tmp_path / "red.png")
    Image.new("RGB", (60, 40), (0, 0, 250)).save(tmp_path / "blue.png")
    (tmp_path / "claims-81mp.png").write_bytes(png_header(9000, 9000))
    (tmp_path / "bomb.png").write_bytes(png_header(100_000, 100_000))
    with open(tmp_path / "sparse.png", "wb") as f:
        f.truncate(2**31)
    return tmp_path


def test_limits_are_per_file_reasons_never_raised(folder):
    names = ["red.png", "claims-81mp.png", "bomb.png", "sparse.png", "blue.png"]
    paths = [folder / n for n in names]
    batches = list(embed_files(paths, mean_colour, 32, batch_size=2, max_bytes=100 * 2**20))
    failures = {names[i]: reason for b in batches for i, reason in b.failures.items()}
    done = {names[i]: vector for b in batches for i, vector in zip(b.indices, b.embeddings)}
    assert sorted(done) == ["blue.png", "red.png"] and done["red.png"][0] > 240
    assert "9000x9000 pixels (81.0 MP), over the limit of 50 MP" in failures["claims-81mp.png"]
    assert "decompression bomb" in failures["bomb.png"]
    assert "2.0 GB, over the limit of 100 MB" in failures["sparse.png"]


def test_raised_pixel_limit_reaches_the_decoder(folder):
    results = list(decoded_in_order([folder / "claims-81mp.png"], 32, max_pixels=100_000_000))
    assert "corrupt or truncated" in results[0][2]       # past the header: the fake data fails


def test_fill_cache_passes_the_limits(folder, tmp_path_factory):
    cache = EmbeddingCache(tmp_path_factory.mktemp("cache"), "toy")
    items = [("r", folder / "red.png"), ("big", folder / "claims-81mp.png"),
             ("sparse", folder / "sparse.png")]
    failures = fill_cache(cache, items, mean_colour, 32, max_bytes=100 * 2**20)
    assert set(failures) == {"big", "sparse"} and cache.missing(["r"]) == []
    assert "over the limit of 50 MP" in failures["big"]
    failures = fill_cache(cache, [("big", folder / "claims-81mp.png")], mean_colour, 32,
                          max_pixels=10**8)
    assert "corrupt or truncated" in failures["big"]


FOUR_HUGE = """
import json, shutil, sys, time
from pathlib import Path
from PIL import Image, ImageDraw
folder = Path(sys.argv[1])
img = Image.new("RGB", (9000, 9000), (40, 90, 160))
ImageDraw.Draw(img).rectangle([1000, 1000, 5000, 7000], fill=(200, 30, 0))
img.save(folder / "0.png", compress_level=1)
del img
for i in range(1, 4):
    shutil.copy(folder / "0.png", folder / f"{i}.png")
"""

DECODE_FOUR = PEAK_RSS_MB + """
import json, sys, time
from pathlib import Path
from models import images
from models.extract import decoded_in_order
images.DECODE_BUDGET.set_limit(float(sys.argv[2]) * 2**20)
paths = sorted(Path(sys.argv[1]).glob("*.png"))
before = peak_rss_mb()
started = time.perf_counter()
out = list(decoded_in_order(paths, 224, workers=4, max_pixels=10**8))
print(json.dumps({"imported_mb": before, "peak_mb": peak_rss_mb(), "seconds": time.perf_counter() - started,
                  "decoded": sum(image is not None for _, image, _ in out),
                  "budget_peak_mb": images.DECODE_BUDGET.peak / 2**20}))
"""

# Measured here (4 decode threads, four 9000x9000 RGB PNGs, each a 309 MiB frame): with the default
# 512 MiB budget one decodes at a time and the process peaks at 354-356 MB (33 MB after imports),
# the same as one decode alone, in 1.8-1.9 s; with the budget lifted (1e6 MB) all four decode at
# once and it peaks at 1,226 MB (1.3 s). Before Pillow's blocks were raised to 64 MiB (see
# models/images.py) the budgeted run still peaked at 973 MB: glibc's per-thread heaps kept each
# thread's freed frame. The bound: one frame (309 MiB) plus imports plus about 100 MB of margin.
FOUR_HUGE_PEAK_RSS_MB = 450


@pytest.mark.slow
def test_four_decode_threads_meeting_four_huge_images_stay_within_the_budget(tmp_path):
    subprocess.run([sys.executable, "-c", FOUR_HUGE, str(tmp_path)], check=True, timeout=120)

    def decode_all(budget_mb):
        done = subprocess.run([sys.executable, "-c", DECODE_FOUR, str(tmp_path), str(budget_mb)],
                              cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    bounded = decode_all(512)
    assert bounded["decoded"] == 4
    assert bounded["budget_peak_mb"] < 512
    assert bounded["peak_mb"] < FOUR_HUGE_PEAK_RSS_MB, bounded
    unbounded = decode_all(1e6)                        # what the budget saves
    assert unbounded["peak_mb"] > bounded["peak_mb"] + 300, (bounded, unbounded)
