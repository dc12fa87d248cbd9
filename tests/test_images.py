import io

import numpy as np
import pytest
from PIL import Image

from models.images import ImageError, MAX_PIXELS, content_hash, decode_image, load_image


def png_bytes(mode="RGB", size=(40, 30), color=(10, 200, 30)):
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


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
