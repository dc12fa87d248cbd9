"""Read image files safely: hash them by streaming, refuse what is too big before decoding it, and
decode to the square RGB arrays a backbone takes (or to a small picture for display).

Every refusal is an `ImageError` whose message names the file and the reason, so an import can skip
the file, record why, and go on with the others. Memory: a file is never read whole, an image over
the pixel limit is refused from its header, and full-size decodes share one `DecodeBudget`.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The default pixel limit, the same as the default of the project setting `max_megapixels`
# (tests/test_images.py keeps the two equal; models/ cannot import loop/). A 50 MP frame is
# bigger than any phone photo. Pillow's own decompression-bomb guard refuses anything over
# 2 * Image.MAX_IMAGE_PIXELS (179 MP) whatever the limit.
MAX_PIXELS = 50_000_000
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

# Images up to this many pixels (after JPEG draft) decode exactly as they always have, bit for bit,
# so embeddings cached by content hash stay valid. 4096x4096 covers screenshots (5K is 14.7 MP) and
# 16 MP camera frames; its worst exact decode (RGBA: the frame plus three full-size copies) is
# 256 MiB. Bigger images are box-reduced a strip at a time first (see `_shrink`). JPEGs never get
# there in practice: draft mode already decodes them at 1/2, 1/4 or 1/8 scale.
EXACT_DECODE_PIXELS = 4096 * 4096
HASH_CHUNK = 1 << 20
STRIP_BYTES = 2 << 20        # rows converted and reduced at a time on the big-image path
MB = 1 << 20                 # the "MB" of max_file_mb and of messages


# Pillow allocates pixels in blocks, 16 MiB by default. glibc serves blocks under 32 MiB from
# per-thread heaps that keep what is freed, so four decode threads that had each met a huge image
# held four frames of RSS even when the budget let one decode at a time (measured: 973 MB for four
# 309 MiB frames). Blocks of 64 MiB are always mmap-ed and go back to the system when freed
# (measured: 354 MB, the same as one decode alone). PILLOW_BLOCK_SIZE, if set, wins.
if "PILLOW_BLOCK_SIZE" not in os.environ:
    Image.core.set_block_size(64 << 20)


class ImageError(ValueError):
    """A file that cannot be used as an image; the message says which file and why."""


# -- files ------------------------------------------------------------------------------------

def _size_text(n: float) -> str:
    return f"{n / (1 << 30):.1f} GB" if n >= 1 << 30 else f"{n / MB:.1f} MB"


def check_file(path: str | Path, max_bytes: int | None = None) -> int:
    """The size in bytes of the regular, non-empty file `path`, from `os.stat` alone (nothing is
    read); an `ImageError` naming the file if it is missing, a folder, empty or over `max_bytes`."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"image '{path}' does not exist") from None
    except OSError as exc:
        raise ImageError(f"image '{path}' cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"image '{path}' is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(f"image '{path}' is not a regular file (a device, pipe or socket)")
    if info.st_size == 0:
        raise ImageError(f"image '{path}' is empty (0 bytes)")
    if max_bytes is not None and info.st_size > max_bytes:
        raise ImageError(f"image '{path}' is {_size_text(info.st_size)}, over the limit of "
                         f"{max_bytes / MB:g} MB per file; a lead can raise the project's "
                         "max_file_mb setting")
    return info.st_size


@contextmanager
def _opened(path: str | Path, max_bytes: int | None) -> Iterator[BinaryIO]:
    check_file(path, max_bytes)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; only open's own errors are caught here)
    except OSError as exc:
        raise ImageError(f"image '{path}' cannot be read: {exc.strerror or exc}") from None
    with f:
        yield f


def read_bytes(path: str | Path, max_bytes: int | None = None) -> bytes:
    """Read a file whole (only for files known to be small; hash with `file_hash`), turning the
    usual failures into an `ImageError` naming the file."""
    with _opened(path, max_bytes) as f:
        try:
            return f.read()
        except OSError as exc:
            raise ImageError(f"image '{path}' cannot be read: {exc.strerror or exc}") from None


def content_hash(data: bytes) -> str:
    """The key of an image everywhere (cache, duplicates): sha256 of the file's bytes."""
    return hashlib.sha256(data).hexdigest()


def file_hash(path: str | Path, max_bytes: int | None = None) -> str:
    """`content_hash` of a file's bytes, read 1 MiB at a time into one buffer: memory stays flat
    whatever the file's size. The size limit is checked with `os.stat` before anything is read.

    >>> file_hash(__file__) == content_hash(Path(__file__).read_bytes())
    True
    """
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    total = 0
    with _opened(path, max_bytes) as f:
        try:
            while n := f.readinto(buffer):
                digest.update(view[:n])
                total += n
                if max_bytes is not None and total > max_bytes:   # it grew since the stat
                    check_file(path, max_bytes)
                    raise ImageError(f"image '{path}' grew over the limit of {max_bytes / MB:g} MB "
                                     "per file while being read")
        except OSError as exc:
            raise ImageError(f"image '{path}' cannot be read: {exc.strerror or exc}") from None
    return digest.hexdigest()


# -- the decode memory budget -------------------------------------------------------------------

class DecodeBudget:
    """A process-wide cap on the bytes of decoded pixels in flight, shared by every decoding thread.

    A decode calls `hold(nbytes)` with its estimated peak (the decoded frame plus any full-size
    copies) before it decodes, and gives the bytes back when done. Requests are served strictly in
    arrival order: one that does not fit waits, and so do those behind it, so a big image is never
    starved by a stream of small ones. A request bigger than the whole budget waits until nothing
    else is held and then runs alone. So at most `max(limit, the largest single request)` bytes are
    held at once, however many threads decode and however big the images are.

    >>> budget = DecodeBudget(100)
    >>> with budget.hold(60):
    ...     budget.in_use
    60
    >>> budget.peak
    60
    """

    def __init__(self, limit_bytes: int):
        self.limit = int(limit_bytes)
        self.in_use = 0
        self.peak = 0                       # the most bytes ever held at once
        self._queue: deque = deque()
        self._changed = threading.Condition()

    def set_limit(self, limit_bytes: int) -> None:
        with self._changed:
            self.limit = int(limit_bytes)
            self._changed.notify_all()

    def _admits(self, ticket: object, nbytes: int) -> bool:
        return self._queue[0] is ticket and (self.in_use == 0 or self.in_use + nbytes <= self.limit)

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        nbytes = max(0, int(nbytes))
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            try:
                self._changed.wait_for(lambda: self._admits(ticket, nbytes))
            finally:
                self._queue.remove(ticket)
                self._changed.notify_all()  # the next in line may fit as well
            self.in_use += nbytes
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= nbytes
                self._changed.notify_all()


# Configurable per process: JUICER_DECODE_BUDGET_MB, or DECODE_BUDGET.set_limit(bytes).
DECODE_BUDGET = DecodeBudget(float(os.environ.get("JUICER_DECODE_BUDGET_MB", "512")) * MB)


# -- decoding -----------------------------------------------------------------------------------

_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
_ORIENTATION = 0x0112


def _pixel_bytes(mode: str) -> int:
    """Bytes per pixel of a Pillow image in memory (RGB is stored in 4 bytes, like RGBA)."""
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info)


def _open_checked(f: BinaryIO, name: str, max_pixels: int | None) -> Image.Image:
    """Open lazily (Pillow reads the header only) and refuse an image over `max_pixels`."""
    img = Image.open(f)
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise ImageError(f"image '{name}' is {width}x{height} pixels ({width * height / 1e6:.1f} MP), "
                         f"over the limit of {max_pixels / 1e6:g} MP; a lead can raise the project's "
                         "max_megapixels setting")
    return img


@contextmanager
def _decoding(name: str) -> Iterator[None]:
    """Turn Pillow's failures into an `ImageError` naming the file."""
    try:
        yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image '{name}' is a decompression bomb or a needlessly huge file "
                         f"(Pillow's hard limit): {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(f"image '{name}' is not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt data as OSError or SyntaxError.
        raise ImageError(f"image '{name}' is corrupt or truncated: {exc}") from None


def _shrink(img: Image.Image, factor: tuple[int, int], mode: str) -> Image.Image:
    """`img` converted to `mode` and box-reduced by `factor` (x, y), a strip of rows at a time, so no
    full-size converted copy ever exists (Pillow's `reduce` of RGBA and `convert` each copy the whole
    frame). Strips are a multiple of the y factor high, so the result equals a whole-frame reduce."""
    fx, fy = factor
    width, height = img.size
    out = Image.new(mode, (-(-width // fx), -(-height // fy)))
    rows = fy * max(1, STRIP_BYTES // (4 * width * fy))
    for top in range(0, height, rows):
        strip = img.crop((0, top, width, min(height, top + rows)))
        if strip.mode != mode:
            strip = strip.convert(mode)
        if factor != (1, 1):
            strip = strip.reduce(factor)
        out.paste(strip, (0, top // fy))
    return out


def _working_mode(img: Image.Image) -> str:
    return "RGBA" if _has_alpha(img) else "L" if img.mode == "L" else "RGB"


def _flatten(img: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on white."""
    if _has_alpha(img):
        if img.mode != "RGBA":
            img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    return img if img.mode == "RGB" else img.convert("RGB")


def _exact_cost(img: Image.Image) -> int:
    """Peak bytes of the exact path: the frame plus the full-size copies it will make."""
    frame = img.width * img.height
    copies = 3 if _has_alpha(img) else 0 if img.mode == "RGB" else 1
    return frame * _pixel_bytes(img.mode) + 4 * frame * (copies + 1)   # +1: a possible rotation


def _shrink_cost(img: Image.Image, factor: tuple[int, int]) -> int:
    """Peak bytes of `_shrink`: the frame, a strip's copies, and the reduced result."""
    reduced = -(-img.width // factor[0]) * -(-img.height // factor[1])
    return img.width * img.height * _pixel_bytes(img.mode) + 3 * STRIP_BYTES + 4 * reduced


def _to_array(img: Image.Image, size: int, budget: DecodeBudget | None) -> np.ndarray:
    budget = budget or DECODE_BUDGET
    # JPEG can decode at 1/2, 1/4, 1/8 scale for free; keep at least 2x the target.
    img.draft("RGB", (2 * size, 2 * size))
    width, height = img.size
    if width * height <= EXACT_DECODE_PIXELS:
        # The original path, less the copies that change nothing (exif_transpose without an
        # orientation and convert to the same mode both return plain copies): bit-identical.
        with budget.hold(_exact_cost(img)):
            img.load()
            if img.getexif().get(_ORIENTATION, 1) in _TRANSPOSE:
                img = ImageOps.exif_transpose(img)
            img = _flatten(img).resize((size, size), Image.BILINEAR)
    else:
        factor = (max(1, width // (2 * size)), max(1, height // (2 * size)))
        with budget.hold(_shrink_cost(img, factor)):
            img.load()
            orientation = img.getexif().get(_ORIENTATION, 1)
            small = _shrink(img, factor, _working_mode(img))
            img.close()                     # the full-size frame goes now, not at the caller's exit
        if orientation in _TRANSPOSE:
            small = small.transpose(_TRANSPOSE[orientation])
        img = _flatten(small).resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def load_image(path: str | Path, size: int, max_pixels: int | None = MAX_PIXELS,
               max_bytes: int | None = None, budget: DecodeBudget | None = None) -> np.ndarray:
    """Decode the file `path` to a (size, size, 3) uint8 RGB array, squashed (not cropped) to the
    square, transparency on white, EXIF orientation applied. The file is refused (`ImageError`)
    over `max_bytes` (from `os.stat`) or `max_pixels` (from the header) before anything is decoded;
    the decode holds its bytes of `budget` (default: the process-wide `DECODE_BUDGET`).
    """
    name = str(path)
    with _opened(path, max_bytes) as f, _decoding(name), _open_checked(f, name, max_pixels) as img:
        return _to_array(img, size, budget)


def decode_image(data: bytes, size: int, name: str = "<bytes>", max_pixels: int | None = MAX_PIXELS,
                 budget: DecodeBudget | None = None) -> np.ndarray:
    """`load_image` of bytes already in memory.

    >>> import io; from PIL import Image
    >>> buf = io.BytesIO(); Image.new("L", (28, 28), 200).save(buf, "PNG")
    >>> decode_image(buf.getvalue(), 224).shape
    (224, 224, 3)
    """
    if not data:
        raise ImageError(f"image '{name}' is empty (0 bytes)")
    with _decoding(name), _open_checked(io.BytesIO(data), name, max_pixels) as img:
        return _to_array(img, size, budget)


def thumbnail(path: str | Path, size: int, max_pixels: int | None = MAX_PIXELS,
              max_bytes: int | None = None, format: str = "PNG",
              budget: DecodeBudget | None = None) -> bytes:
    """The image at `path` for display, encoded as `format` (PNG or JPEG): at most `size` px on its
    long side, aspect kept, upright (EXIF orientation), transparency on white. Small images are
    enlarged to `size`, with NEAREST when that is more than 2x (pixel art stays crisp), BILINEAR
    otherwise. A big image is decoded at reduced scale where the format allows (JPEG draft) and
    box-reduced a strip at a time, so no full-size converted copy exists. Same limits and
    `ImageError`s as `load_image`.
    """
    return encoded(display_image(path, size, max_pixels, max_bytes, budget), format)


def display_image(path: str | Path, size: int, max_pixels: int | None = MAX_PIXELS,
                  max_bytes: int | None = None, budget: DecodeBudget | None = None,
                  enlarge: bool = True) -> Image.Image:
    """The decoded RGB picture `thumbnail` encodes (decode once, encode in several formats);
    `enlarge=False` keeps an image smaller than `size` at its own size."""
    name = str(path)
    with _opened(path, max_bytes) as f, _decoding(name), _open_checked(f, name, max_pixels) as img:
        width, height = img.size
        if not enlarge:
            size = min(size, max(width, height))
        scale = size / max(width, height)
        target = (max(1, int(width * scale)), max(1, int(height * scale)))
        img.draft("RGB", target)
        factor = max(1, min(img.width // target[0], img.height // target[1]))
        with (budget or DECODE_BUDGET).hold(_shrink_cost(img, (factor, factor))):
            img.load()
            orientation = img.getexif().get(_ORIENTATION, 1)
            small = _shrink(img, (factor, factor), _working_mode(img))
    resample = Image.NEAREST if scale > 2 else Image.BILINEAR
    small = small.resize(target, resample)
    if orientation in _TRANSPOSE:
        small = small.transpose(_TRANSPOSE[orientation])
    return _flatten(small)


def encoded(picture: Image.Image, format: str = "PNG") -> bytes:
    """`picture` as the bytes of an image file in `format` (an OSError or KeyError where this
    Pillow has no encoder for it)."""
    buffer = io.BytesIO()
    picture.save(buffer, format)
    return buffer.getvalue()
