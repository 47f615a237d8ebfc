"""Thumbnails as data URIs: the review page and the Label Studio tasks carry their images inline,
so they open anywhere (a file:// URL, another machine) without serving the run's image folders."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image

from classification.images import BadImage, decode

QUALITY = 88  # JPEG quality: small files, no visible blocking at thumbnail size


@dataclass(frozen=True)
class Thumb:
    uri: str | None    # data:image/jpeg;base64,... ; None when the file could not be decoded
    side: int = 0      # the thumbnail's larger side in pixels
    problem: str = ""  # why there is no thumbnail


def thumbnail(path: str, max_side: int) -> Thumb:
    """The image at `path` shrunk to at most `max_side` pixels a side (never enlarged: the page
    scales small images up with sharp pixels instead of inlining bigger blurred copies)."""
    try:
        rgb = decode(path, draft_size=max_side)
    except BadImage as e:
        return Thumb(None, problem=str(e))
    img = Image.fromarray(rgb)
    img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=QUALITY)
    return Thumb("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
                 max(img.size))
