"""Decoding: every common mode becomes RGB uint8, orientation is applied, bad files say why."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from classification.images import BadImage, decode, file_digest, is_image_path
from tests.conftest import make_image


@pytest.mark.parametrize("mode,fmt,ext", [
    ("RGB", "JPEG", "jpg"), ("L", "PNG", "png"), ("LA", "PNG", "png"), ("P", "PNG", "png"),
    ("RGBA", "PNG", "png"), ("CMYK", "JPEG", "jpg"), ("RGB", "WEBP", "webp"), ("RGB", "BMP", "bmp"),
    ("RGB", "TIFF", "tif"),
])
def test_modes_decode_to_rgb(tmp_path, mode, fmt, ext):
    path = make_image(tmp_path / f"x.{ext}", mode=mode, fmt=fmt)
    arr = decode(path)
    assert arr.dtype == np.uint8 and arr.shape == (32, 40, 3)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(path)
    arr = decode(path)
    assert arr.shape == (8, 8, 3) and 150 < arr[0, 0, 0] < 160  # 40000 / 65535 * 255 = 155


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert (decode(path) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(path, exif=exif)
    assert decode(path).shape == (40, 20, 3)


@pytest.mark.parametrize("content,reason", [
    (b"", "not a recognised image format"),
    (b"hello, I am text", "not a recognised image format"),
])
def test_non_images_raise_bad_image(tmp_path, content, reason):
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        decode(path)


def test_truncated_jpeg_raises_bad_image(tmp_path):
    path = make_image(tmp_path / "full.jpg", size=(64, 64))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BadImage, match="cannot decode"):
        decode(cut)


def test_png_named_jpg_decodes(tmp_path):
    path = make_image(tmp_path / "really_png.jpg", fmt="PNG")
    assert decode(path).shape == (32, 40, 3)


def test_extensions_are_case_insensitive_and_digest_is_content():
    assert is_image_path("A.JPG") and is_image_path("b.TiFf") and not is_image_path("c.txt")


def test_digest_depends_on_content_only(tmp_path):
    a = make_image(tmp_path / "a.png", fmt="PNG")
    b = tmp_path / "b.png"
    b.write_bytes(a.read_bytes())
    assert file_digest(a) == file_digest(b)
