"""Reading image files: discovery by extension, content hashing and robust decoding.

Every decoded image is an RGB uint8 array (H, W, 3) with its EXIF orientation applied. Files
that cannot be decoded raise `BadImage` with a short reason, which callers turn into a reported
skip rather than a traceback.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from classification.errors import first_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class BadImage(Exception):
    """A file that is not a decodable image. The message is the reason, without the path."""


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def file_digest(path: str | Path) -> str:
    """Content hash of a file (BLAKE2b, 128 bits, hex): the identity of an image everywhere."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def decode(path: str | Path, draft_size: int | None = None) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3).

    Args:
        path: the file.
        draft_size: if given, JPEGs are decoded at the smallest DCT scale that keeps both sides
            at least this large, which makes big photos several times cheaper to read.

    Raises:
        BadImage: unreadable, truncated, not an image, or over Pillow's decompression-bomb limit.
    """
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; refuse both the same way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(_bomb_reason()) from None
    except UnidentifiedImageError:
        raise BadImage("not a recognised image format") from None
    except PermissionError:
        raise BadImage("permission denied") from None
    except OSError as e:  # truncated data, broken streams, I/O errors
        raise BadImage(f"cannot decode ({first_line(e)})") from None
    except (ValueError, SyntaxError, EOFError) as e:  # raised by some Pillow plugins on bad data
        raise BadImage(f"cannot decode ({first_line(e)})") from None


def probe(path: str | Path) -> None:
    """Cheap check that `path` looks like an image Pillow can open: reads the header only.

    Catches what can be known without decoding (not an image, empty, over the decompression-bomb
    limit), so those files are reported when a set is loaded rather than on every pass over it;
    damage further in (a truncated JPEG) still surfaces in `decode`.

    Raises:
        BadImage: with the same reasons `decode` gives.
    """
    try:
        with Image.open(path) as img:
            w, h = img.size
    except Image.DecompressionBombError:
        raise BadImage(_bomb_reason()) from None
    except UnidentifiedImageError:
        raise BadImage("not a recognised image format") from None
    except PermissionError:
        raise BadImage("permission denied") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise BadImage(f"cannot decode ({first_line(e)})") from None
    # Pillow only warns between 1x and 2x its limit; decode refuses those, so refuse them here too.
    if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
        raise BadImage(_bomb_reason())
    if w <= 0 or h <= 0:
        raise BadImage(f"empty image ({w}x{h} pixels)")


def _bomb_reason() -> str:
    return f"larger than the decompression-bomb limit ({Image.MAX_IMAGE_PIXELS} pixels)"


def to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to RGB uint8; transparent pixels are composited onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 255.0)
        arr = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadImage(f"unexpected decoded shape {arr.shape}")
    return arr
