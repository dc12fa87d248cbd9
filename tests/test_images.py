import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from loop.settings import Settings
from models import images
from models.images import (
    MAX_PIXELS,
    DecodeBudget,
    ImageError,
    content_hash,
    decode_image,
    file_hash,
    load_image,
    read_bytes,
    thumbnail,
)

REPO = Path(__file__).resolve().parent.parent


def png_bytes(mode="RGB", size=(40, 30), color=(10, 200, 30)):
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


def png_header(width, height):
    """A tiny PNG that claims a `width` x `height` RGB canvas (its pixel data is a few bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def run_python(code):
    """Run `code` in a fresh interpreter at the repository root; returns its last stdout line as JSON."""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the decode before issue 9, frozen: new decodes of ordinary images must equal it bit for bit --

def decode_image_before_issue_9(data: bytes, size: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (2 * size, 2 * size))
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img)
            img = img.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)


def photo_like(width, height, seed=0):
    """Smooth colour gradients plus noise: compresses like a photo, exercises every filter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1),
                     (x + y) * 255 // max(1, width + height - 2)], axis=-1)
    return np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)


def encoded(img, fmt, **options):
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def rotated_exif(orientation=6):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def ordinary_images():
    rgb = Image.fromarray(photo_like(300, 200))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(photo_like(300, 200, 1)[..., 0]))
    palette = rgb.quantize(64)
    palette_clear = palette.copy()
    palette_clear.info["transparency"] = 3
    sixteen = Image.fromarray(photo_like(120, 90)[..., 0].astype(np.uint16) * 257)
    return {
        "png-rgb": encoded(rgb, "PNG"),
        "png-rgb-tiny": encoded(rgb.resize((28, 20)), "PNG"),
        "png-gray": encoded(rgb.convert("L"), "PNG"),
        "png-1bit": encoded(rgb.convert("1"), "PNG"),
        "png-rgba": encoded(rgba, "PNG"),
        "png-la": encoded(rgba.convert("LA"), "PNG"),
        "png-palette": encoded(palette, "PNG"),
        "png-palette-transparent": encoded(palette_clear, "PNG", transparency=3),
        "png-16bit": encoded(sixteen, "PNG"),
        "png-exif-rotated": encoded(rgb, "PNG", exif=rotated_exif(8)),
        "jpeg": encoded(rgb, "JPEG", quality=90),
        "jpeg-gray": encoded(rgb.convert("L"), "JPEG"),
        "jpeg-cmyk": encoded(rgb.convert("CMYK"), "JPEG"),
        "jpeg-exif-rotated": encoded(rgb, "JPEG", exif=rotated_exif(6)),
        "jpeg-exif-mirrored": encoded(rgb, "JPEG", exif=rotated_exif(2)),
        "jpeg-big-draft": encoded(Image.fromarray(photo_like(2000, 1400)), "JPEG", quality=85),
        "webp": encoded(rgb, "WEBP"),
        "gif": encoded(palette, "GIF"),
        "bmp": encoded(rgb, "BMP"),
        "tiff-rgba": encoded(rgba, "TIFF"),
    }


@pytest.fixture(scope="module")
def ordinary():
    return ordinary_images()


KINDS = ["png-rgb", "png-rgb-tiny", "png-gray", "png-1bit", "png-rgba", "png-la", "png-palette",
         "png-palette-transparent", "png-16bit", "png-exif-rotated", "jpeg", "jpeg-gray", "jpeg-cmyk",
         "jpeg-exif-rotated", "jpeg-exif-mirrored", "jpeg-big-draft", "webp", "gif", "bmp", "tiff-rgba"]


def test_every_kind_is_tested(ordinary):
    assert sorted(ordinary) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_ordinary_images_decode_bit_identical_to_before(kind, ordinary, tmp_path):
    data = ordinary[kind]
    path = tmp_path / f"image.{kind.split('-')[0]}"
    path.write_bytes(data)
    for size in (224, 97):
        before = decode_image_before_issue_9(data, size)
        assert np.array_equal(load_image(path, size), before), f"{kind} at {size}"
        assert np.array_equal(decode_image(data, size), before), f"{kind} at {size} from bytes"


def test_exif_rotation_is_applied(ordinary):
    upright = decode_image(ordinary["jpeg"], 64)
    rotated = decode_image(ordinary["jpeg-exif-rotated"], 64)
    assert not np.array_equal(upright, rotated)


def test_big_image_path_is_close_to_the_exact_one(ordinary, monkeypatch):
    """Above EXACT_DECODE_PIXELS images are box-reduced in strips first: nearly the same pixels."""
    exact = {kind: decode_image(ordinary[kind], 64) for kind in ordinary}
    monkeypatch.setattr(images, "EXACT_DECODE_PIXELS", 0)
    monkeypatch.setattr(images, "STRIP_BYTES", 4096)      # many strips, a partial one at the end
    for kind, data in ordinary.items():
        reduced = decode_image(data, 64)
        assert reduced.shape == (64, 64, 3)
        error = np.abs(reduced.astype(int) - exact[kind]).mean()
        assert error < 6, f"{kind}: mean difference {error:.2f}"


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_strip_reduce_equals_whole_frame_reduce(mode, monkeypatch):
    img = Image.fromarray(photo_like(301, 207)).convert(mode)
    monkeypatch.setattr(images, "STRIP_BYTES", 3000)
    for factor in [(1, 1), (3, 2), (7, 7), (2, 5)]:
        expected = img.reduce(factor) if factor != (1, 1) else img
        assert images._shrink(img, factor, mode).tobytes() == expected.tobytes()


def test_decodes_and_squashes_to_square():
    image = decode_image(png_bytes(), 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tuple(image[32, 32]) == (10, 200, 30)


def test_grayscale_and_transparent_images_become_rgb():
    assert decode_image(png_bytes("L", color=128), 32)[0, 0].tolist() == [128, 128, 128]
    transparent = decode_image(png_bytes("RGBA", color=(0, 0, 0, 0)), 32)
    assert transparent[0, 0].tolist() == [255, 255, 255]  # composited on white, not black


def test_jpeg_large_image_decodes(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), (200, 0, 0)).save(path, quality=80)
    image = load_image(path, 224)
    assert image.shape == (224, 224, 3) and image[100, 100, 0] > 180


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"this is not an image at all", "not a readable image"),
    (png_bytes()[:60], "corrupt or truncated"),
])
def test_bad_files_raise_a_clear_error(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as info:
        load_image(path, 32)
    assert "bad.png" in str(info.value)


def test_truncated_jpeg_is_refused(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(path, 32)


def test_decompression_bomb_is_refused():
    # A tiny file that claims a huge canvas: the header is read, the pixels never allocated.
    side = int(MAX_PIXELS ** 0.5) + 100
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 5_000_000
    with pytest.raises(ImageError, match="pixels|decompression bomb"):
        decode_image(buffer.getvalue(), 32, name="bomb.png")


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.jpg", 32)
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path, 32)


def test_content_hash_is_of_the_bytes():
    assert content_hash(b"a") == content_hash(b"a") != content_hash(b"b")


# -- limits ----------------------------------------------------------------------------------

def test_default_limits_are_the_project_settings_defaults():
    assert MAX_PIXELS == Settings().max_megapixels * 1e6


def test_pixel_limit_is_checked_from_the_header(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(png_header(9000, 9000))
    with pytest.raises(ImageError, match=r"image '.*x.png' is 9000x9000 pixels \(81.0 MP\), over the "
                                         r"limit of 50 MP; a lead can raise"):
        load_image(path, 224)
    with pytest.raises(ImageError, match="over the limit of 80 MP"):
        thumbnail(path, 256, max_pixels=80_000_000)
    # Raised, the header passes and the (fake) pixel data is what fails.
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(path, 224, max_pixels=100_000_000)


def test_crafted_huge_header_is_refused_fast_with_almost_no_memory(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(100_000, 100_000))
    assert path.stat().st_size < 200
    started = time.perf_counter()
    for limit in (MAX_PIXELS, None, 10**12):       # whatever the limit, Pillow's guard holds
        with pytest.raises(ImageError, match="bomb.png") as info:
            load_image(path, 224, max_pixels=limit)
        assert "decompression bomb" in str(info.value) or "100000x100000" in str(info.value)
        with pytest.raises(ImageError, match="bomb.png"):
            thumbnail(path, 256, max_pixels=limit)
    assert time.perf_counter() - started < 0.5
    grew = run_python(PEAK_RSS_MB + f"""
import json
from models.images import ImageError, load_image
before = peak_rss_mb()
for _ in range(20):
    try:
        load_image({str(path)!r}, 224, max_pixels=None)
    except ImageError:
        pass
print(json.dumps(peak_rss_mb() - before))
""")
    assert grew < 5, f"refusing a crafted header grew the peak RSS by {grew:.1f} MB"


def test_sparse_2_gib_file_is_refused_for_size_without_reading(tmp_path):
    path = tmp_path / "x.png"
    with open(path, "wb") as f:
        f.truncate(2**31)
    started = time.perf_counter()
    message = (r"image '.*x.png' is 2.0 GB, over the limit of 100 MB per file; a lead can raise "
               r"the project's max_file_mb setting")
    with pytest.raises(ImageError, match=message):
        file_hash(path, max_bytes=100 * 2**20)
    with pytest.raises(ImageError, match=message):
        load_image(path, 224, max_bytes=100 * 2**20)
    with pytest.raises(ImageError, match=message):
        thumbnail(path, 256, max_bytes=100 * 2**20)
    with pytest.raises(ImageError, match=message):
        read_bytes(path, max_bytes=100 * 2**20)
    assert time.perf_counter() - started < 0.2


def test_file_hash_streams_and_equals_sha256(tmp_path):
    data = np.random.default_rng(0).bytes(3 * 2**20 + 12345)    # crosses 1 MiB chunk borders
    path = tmp_path / "x.png"
    path.write_bytes(data)
    assert file_hash(path) == hashlib.sha256(data).hexdigest() == content_hash(path.read_bytes())
    assert file_hash(path, max_bytes=len(data)) == content_hash(read_bytes(path))
    with pytest.raises(ImageError, match="over the limit of 3 MB"):
        file_hash(path, max_bytes=3 * 2**20)


def test_file_hash_errors_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="'.*nope.png' does not exist"):
        file_hash(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        file_hash(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="'.*empty.png' is empty"):
        file_hash(tmp_path / "empty.png")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        file_hash(fifo)
    if os.geteuid() != 0:        # root reads whatever the mode says
        locked = tmp_path / "locked.png"
        locked.write_bytes(b"x")
        locked.chmod(0)
        with pytest.raises(ImageError, match="'.*locked.png' cannot be read"):
            file_hash(locked)


# -- a 9000x9000 PNG, like the report's ---------------------------------------------------------

@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """9000x9000 RGB, compressible (about 1 MB at zlib level 1, written in about a second, in a
    child process so this one does not grow by the 309 MiB frame)."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    run_python(f"""
import json
from PIL import Image, ImageDraw
img = Image.new("RGB", (9000, 9000), (40, 90, 160))
draw = ImageDraw.Draw(img)
for i in range(0, 9000, 1000):
    draw.rectangle([i, i // 2, i + 700, i // 2 + 3000], fill=(i * 7 % 256, 250, 0))
img.save({str(path)!r}, compress_level=1)
print(json.dumps(None))
""")
    return path


# The child's own peak: VmHWM of /proc/self/status. Not ru_maxrss: Linux carries a process's
# maxrss across fork and exec, so a child of a big pytest process would report the parent's peak.
PEAK_RSS_MB = """
def peak_rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
"""


# Measured here (three runs): the child peaks at 346 MB (32 MB after its imports; the decoded
# 9000x9000 RGB frame alone is 309 MiB, as Pillow keeps RGB in 4 bytes a pixel); the decode takes
# 0.46-0.50 s and the thumbnail after it 0.47-0.53 s, adding 1 MB to the peak. The frozen decode
# from before issue 9 peaks at 983 MB on the same file and takes 2.4 s. The bound leaves about
# 100 MB of margin.
HUGE_DECODE_PEAK_RSS_MB = 450


def test_huge_png_refused_by_default_and_decoded_in_bounded_memory_when_raised(huge_png):
    with pytest.raises(ImageError, match="9000x9000 pixels"):
        load_image(huge_png, 224)
    figures = run_python(PEAK_RSS_MB + f"""
import json, time
from models.images import load_image, thumbnail
started = time.perf_counter()
image = load_image({str(huge_png)!r}, 224, max_pixels=100_000_000)
seconds = time.perf_counter() - started
picture = thumbnail({str(huge_png)!r}, 512, max_pixels=100_000_000)
print(json.dumps({{"peak_mb": peak_rss_mb(),
                  "seconds": seconds, "shape": image.shape, "pixel": image[50, 20].tolist(),
                  "background": image[220, 2].tolist(), "picture": picture.hex()}}))
""")
    assert figures["shape"] == [224, 224, 3]
    assert figures["background"] == [40, 90, 160]
    assert figures["peak_mb"] < HUGE_DECODE_PEAK_RSS_MB, figures["peak_mb"]
    with Image.open(io.BytesIO(bytes.fromhex(figures["picture"]))) as picture:
        assert picture.size == (512, 512) and picture.getpixel((500, 10)) == (40, 90, 160)


# -- the decode budget ----------------------------------------------------------------------------

def test_budget_lets_at_most_its_limit_through_at_once():
    budget = DecodeBudget(100)
    lock = threading.Lock()
    held, most, together = [0], [0], [0]
    rng = np.random.default_rng(0)
    requests = [int(n) for n in rng.integers(1, 101, 40)]

    def decode(nbytes):
        with budget.hold(nbytes):
            with lock:
                held[0] += nbytes
                together[0] += 1
                most[0] = max(most[0], held[0])
                together.append(together[0])
            time.sleep(0.002)
            with lock:
                held[0] -= nbytes
                together[0] -= 1

    threads = [threading.Thread(target=decode, args=(n,)) for n in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert most[0] <= 100 and budget.peak <= 100 and budget.in_use == 0
    assert max(together) >= 3            # and it did let several through together


def test_budget_runs_an_oversized_request_alone_and_does_not_starve_it():
    budget = DecodeBudget(100)
    events = []
    small_started = threading.Event()

    def small(i):
        with budget.hold(30):
            small_started.set()
            events.append(("small", i, budget.in_use))
            time.sleep(0.01)

    def big():
        with budget.hold(250):
            events.append(("big", 0, budget.in_use))
            time.sleep(0.01)

    first = [threading.Thread(target=small, args=(i,)) for i in range(3)]
    for thread in first:
        thread.start()
    small_started.wait(1)
    waiting_big = threading.Thread(target=big)
    waiting_big.start()
    time.sleep(0.002)
    later = [threading.Thread(target=small, args=(i,)) for i in range(3, 6)]
    for thread in later:
        thread.start()
    for thread in first + [waiting_big] + later:
        thread.join(5)
    assert ("big", 0, 250) in events                   # alone: nothing else was held
    big_at = events.index(("big", 0, 250))
    assert all(i >= 3 for kind, i, _ in events[big_at + 1:])   # came before the later ones
    assert budget.in_use == 0 and budget.peak == 250


def test_decodes_hold_their_cost_of_the_budget(tmp_path, ordinary):
    from concurrent.futures import ThreadPoolExecutor

    for i in range(8):
        (tmp_path / f"{i}.png").write_bytes(ordinary["png-rgba"])
    cost = 300 * 200 * 4 * 5                          # the frame and its full-size copies
    budget = DecodeBudget(2 * cost)
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda i: load_image(tmp_path / f"{i}.png", 64, budget=budget), range(8)))
    assert all(np.array_equal(o, out[0]) for o in out)
    assert cost <= budget.peak <= 2 * cost and budget.in_use == 0


# -- thumbnails for display -------------------------------------------------------------------

def picture_of(data):
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_thumbnail_enlarges_small_images_without_blurring(tmp_path):
    small = Image.fromarray(np.kron(np.eye(2, dtype=np.uint8) * 255, np.ones((14, 14), np.uint8)))
    path = tmp_path / "small.png"
    small.save(path)
    picture = picture_of(thumbnail(path, 224))
    assert picture.size == (224, 224) and picture.mode == "RGB"
    values = np.asarray(picture)
    assert set(np.unique(values)) == {0, 255}          # NEAREST: no blended edge pixels
    assert values[0, 0].tolist() == [255, 255, 255] and values[0, 223].tolist() == [0, 0, 0]


def test_thumbnail_shrinks_keeps_aspect_and_applies_orientation(tmp_path, ordinary):
    path = tmp_path / "photo.jpg"
    path.write_bytes(ordinary["jpeg-big-draft"])            # 2000x1400
    picture = picture_of(thumbnail(path, 300))
    assert picture.size == (300, 210)
    path.write_bytes(ordinary["jpeg-exif-rotated"])         # 300x200, orientation 6
    assert picture_of(thumbnail(path, 150)).size == (100, 150)
    path.write_bytes(ordinary["png-rgb"])                   # 1 < scale <= 2: BILINEAR
    assert picture_of(thumbnail(path, 450)).size == (450, 300)
    jpeg = picture_of(thumbnail(path, 120, format="JPEG"))
    assert jpeg.format == "JPEG" and jpeg.size == (120, 80)


def test_thumbnail_composites_transparency_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(path)
    assert picture_of(thumbnail(path, 64)).getpixel((10, 10)) == (255, 255, 255)


def test_thumbnail_errors_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        thumbnail(tmp_path / "nope.png", 64)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="'.*bad.png' is not a readable image"):
        thumbnail(tmp_path / "bad.png", 64)
