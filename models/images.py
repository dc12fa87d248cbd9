"""Decode image files into the square RGB arrays a backbone takes, refusing what is not a sane image.

Every refusal is an `ImageError` whose message names the file and the reason, so an import can skip
the file, record why, and go on with the others.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Larger than any camera photo (a 100 MP frame is 1e8); a file that decodes to more is a
# decompression bomb or not worth the memory. Pillow warns above its own limit, errors at twice it.
MAX_PIXELS = 120_000_000
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class ImageError(ValueError):
    """A file that cannot be used as an image; the message says which file and why."""


def read_bytes(path: str | Path) -> bytes:
    """Read a file whole, turning the usual failures into an `ImageError` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image '{path}' does not exist") from None
    except IsADirectoryError:
        raise ImageError(f"image '{path}' is a folder, not a file") from None
    except OSError as exc:
        raise ImageError(f"image '{path}' cannot be read: {exc.strerror or exc}") from None
    if not data:
        raise ImageError(f"image '{path}' is empty (0 bytes)")
    return data


def content_hash(data: bytes) -> str:
    """The key of an image everywhere (cache, duplicates): sha256 of the file's bytes."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, size: int, name: str = "<bytes>") -> np.ndarray:
    """Decode `data` to a (size, size, 3) uint8 RGB array, squashed (not cropped) to the square.

    >>> import io; from PIL import Image
    >>> buf = io.BytesIO(); Image.new("L", (28, 28), 200).save(buf, "PNG")
    >>> decode_image(buf.getvalue(), 224).shape
    (224, 224, 3)
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"image '{name}' is {width}x{height} pixels, over the limit of "
                        f"{MAX_PIXELS:,} (a decompression bomb or a needlessly huge file)")
                # JPEG can decode at 1/2, 1/4, 1/8 scale for free; keep at least 2x the target.
                img.draft("RGB", (2 * size, 2 * size))
                img = ImageOps.exif_transpose(img)
                if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                    img = img.convert("RGBA")
                    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                    img = Image.alpha_composite(background, img)
                img = img.convert("RGB").resize((size, size), Image.BILINEAR)
                return np.asarray(img, dtype=np.uint8)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image '{name}' is a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(f"image '{name}' is not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt data as OSError or SyntaxError.
        raise ImageError(f"image '{name}' is corrupt or truncated: {exc}") from None


def load_image(path: str | Path, size: int) -> np.ndarray:
    """`decode_image` of a file on disk."""
    return decode_image(read_bytes(path), size, name=str(path))
