"""Box geometry as small numpy-in/numpy-out functions.

A box is `(x0, y0, x1, y1)` in pixel-edge coordinates: a box covering a whole W x H image is
`(0, 0, W, H)`. A *geometry* row `(ax, bx, ay, by, W, H)` records where an original W x H
image went in a model input: `x' = ax * x + bx`, `y' = ay * y + by` (a horizontal flip makes
`ax` negative). Letterboxing, stretching, flips and scale/shift augmentation are all of this
axis-aligned form, so one row per (image, view) maps any box in either direction exactly: human
boxes into training targets, predictions back to original pixels, flipped views back unflipped.
"""
from __future__ import annotations

import numpy as np

RESIZES = ("letterbox", "stretch")  # letterbox: longest side to `size`, then pad; stretch: to size x size
GEO_COLS = 6  # ax, bx, ay, by, W, H


def resize_plan(w: int, h: int, size: int, resize: str) -> tuple[int, int, int, int]:
    """(new_w, new_h, pad_left, pad_top) that fit a w x h image into size x size."""
    if resize not in RESIZES:
        raise ValueError(f"unknown resize {resize!r}; valid: {', '.join(RESIZES)}")
    if resize == "stretch":
        return size, size, 0, 0
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    return new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


def resize_geometry(w: int, h: int, size: int, resize: str) -> np.ndarray:
    """The geometry row of `resize_plan`: the scale per axis is exactly new/old."""
    new_w, new_h, left, top = resize_plan(w, h, size, resize)
    return np.array([new_w / w, left, new_h / h, top, w, h], np.float64)


def flip_geometry(w: int, h: int) -> np.ndarray:
    """A horizontal flip of a w x h image: x -> w - x."""
    return np.array([-1.0, w, 1.0, 0.0, w, h], np.float64)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The geometry of applying `inner`, then `outer` (rows or (N, 6) arrays); W, H stay inner's."""
    outer, inner = np.asarray(outer, np.float64), np.asarray(inner, np.float64)
    out = inner.copy()
    out[..., 0] = outer[..., 0] * inner[..., 0]
    out[..., 1] = outer[..., 0] * inner[..., 1] + outer[..., 1]
    out[..., 2] = outer[..., 2] * inner[..., 2]
    out[..., 3] = outer[..., 2] * inner[..., 3] + outer[..., 3]
    return out


def _apply(boxes: np.ndarray, ax, bx, ay, by) -> np.ndarray:
    xs = boxes[:, [0, 2]] * ax[:, None] + bx[:, None]
    ys = boxes[:, [1, 3]] * ay[:, None] + by[:, None]
    xs.sort(axis=1)  # a flip swaps the left and right edges
    ys.sort(axis=1)
    return np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)


def map_boxes(boxes: np.ndarray, geo: np.ndarray) -> np.ndarray:
    """Boxes (N, 4) through geometry rows (N, 6 or 6,), unclipped and unnormalised."""
    boxes, geo = np.atleast_2d(boxes).astype(np.float64), np.atleast_2d(geo)
    if len(geo) == 1 and len(boxes) > 1:
        geo = np.repeat(geo, len(boxes), axis=0)
    return _apply(boxes, geo[:, 0], geo[:, 1], geo[:, 2], geo[:, 3])


def to_model(boxes: np.ndarray, geo: np.ndarray, size: int) -> np.ndarray:
    """Original-pixel boxes (N, 4) -> normalised model boxes in [0, 1], clipped to the part of
    the image that is visible in the view (augmentation may shift part of it out)."""
    boxes, geo = np.atleast_2d(boxes).astype(np.float64), np.atleast_2d(geo)
    ax, bx, ay, by, w, h = geo.T
    out = _apply(boxes, ax, bx, ay, by)
    seen = _apply(np.stack([np.zeros_like(w), np.zeros_like(h), w, h], 1), ax, bx, ay, by)
    lo = np.clip(seen[:, :2], 0, size)
    hi = np.clip(seen[:, 2:], 0, size)
    out[:, :2] = np.clip(out[:, :2], lo, hi)
    out[:, 2:] = np.clip(out[:, 2:], lo, hi)
    return out / size


def to_original(boxes: np.ndarray, geo: np.ndarray, size: int) -> np.ndarray:
    """Normalised model boxes (N, 4) -> original pixels, clipped to the image."""
    boxes, geo = np.atleast_2d(boxes).astype(np.float64) * size, np.atleast_2d(geo)
    ax, bx, ay, by, w, h = geo.T
    out = _apply(boxes, 1.0 / ax, -bx / ax, 1.0 / ay, -by / ay)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w[:, None])
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h[:, None])
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row i of `a` with row i of `b` ((N, 4) each) -> (N,); 0 where both are empty."""
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    assert a.shape == b.shape and a.shape[-1] == 4, (a.shape, b.shape)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.atleast_2d(boxes)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def mean_box(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The mean box in relative coordinates (x / W, y / H): the baseline to beat."""
    rel = np.atleast_2d(boxes) / np.tile(np.atleast_2d(sizes), 2)
    return rel.mean(axis=0)


def from_relative(rel: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """One relative box (4,) placed in each image of `sizes` (N, 2 = W, H) -> (N, 4) pixels."""
    return np.asarray(rel)[None, :] * np.tile(np.atleast_2d(sizes), 2)


def box_problem(box: np.ndarray, w: int, h: int) -> str | None:
    """Why a box cannot be used on a w x h image, or None if it can."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not np.all(np.isfinite(box)):
        return "box has a non-numeric coordinate"
    if x1 <= x0 or y1 <= y0:
        return f"empty box ({x0:g},{y0:g},{x1:g},{y1:g}): needs x0 < x1 and y0 < y1"
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        return f"box ({x0:g},{y0:g},{x1:g},{y1:g}) outside the {w}x{h} image"
    return None
