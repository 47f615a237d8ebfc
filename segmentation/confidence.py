"""From class probabilities to a pseudo-mask and the numbers the pseudo-mask loop decides on.

Pure numpy, one image at a time:
- `mask_confidence(probs)` -> (predicted mask, per-pixel confidence, image confidence);
- `pseudo_mask(pred, pixel_conf, pixel_threshold)`: the prediction with unsure pixels set to
  IGNORE, so that training skips them rather than forcing them to a class;
- `accept(image_conf, threshold)`: which images' pseudo-masks are taken.
The image confidence is one of `IMAGE_RULES` (a plain registry): over a mostly-background image
the plain pixel mean is near 1 whatever the defect looks like, so the defaults look at the pixels
that matter.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from segmentation.data import IGNORE


def pixel_confidence(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pred uint8 (H, W), conf float32 (H, W)): argmax class and its probability."""
    assert probs.ndim == 3, probs.shape
    pred = probs.argmax(0)
    conf = np.take_along_axis(probs, pred[None], 0)[0]
    return pred.astype(np.uint8), conf.astype(np.float32)


def _mean(pred: np.ndarray, conf: np.ndarray, pixel_threshold: float) -> float:
    return float(conf.mean())


def _defect_mean(pred: np.ndarray, conf: np.ndarray, pixel_threshold: float) -> float:
    """Mean confidence over the pixels predicted as a defect and a band around them (where the
    boundary is decided); the whole image when nothing is predicted."""
    region = _near_defect(pred)
    return float(conf[region].mean()) if region.any() else float(conf.mean())


def _sure_fraction(pred: np.ndarray, conf: np.ndarray, pixel_threshold: float) -> float:
    """Share of the defect region (as above) whose pixels are at least `pixel_threshold` sure."""
    region = _near_defect(pred)
    region = region if region.any() else np.ones_like(region)
    return float((conf[region] >= pixel_threshold).mean())


def _near_defect(pred: np.ndarray, band: int = 3) -> np.ndarray:
    import cv2

    fg = (pred > 0).astype(np.uint8)
    if not fg.any():
        return fg.astype(bool)
    return cv2.dilate(fg, np.ones((2 * band + 1, 2 * band + 1), np.uint8)).astype(bool)


ImageRule = Callable[[np.ndarray, np.ndarray, float], float]
IMAGE_RULES: dict[str, ImageRule] = {"mean": _mean, "defect_mean": _defect_mean,
                                     "sure_fraction": _sure_fraction}


def image_rule(name: str) -> ImageRule:
    if name not in IMAGE_RULES:
        raise ValueError(f"unknown image confidence rule {name!r}; valid: {', '.join(IMAGE_RULES)}")
    return IMAGE_RULES[name]


def mask_confidence(probs: np.ndarray, rule: str = "defect_mean",
                    pixel_threshold: float = 0.9) -> tuple[np.ndarray, np.ndarray, float]:
    """(pred (H, W) uint8, pixel_conf (H, W) float32, image_conf float) from probs (C, H, W)."""
    pred, conf = pixel_confidence(probs)
    return pred, conf, image_rule(rule)(pred, conf, pixel_threshold)


def unsure(pixel_conf: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """bool (H, W): pixels whose confidence is under `pixel_threshold` (left out of the loss)."""
    return pixel_conf < pixel_threshold


def pseudo_mask(pred: np.ndarray, pixel_conf: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """The predicted mask with unsure pixels set to IGNORE (uint8, ready to write as PNG)."""
    out = pred.astype(np.uint8).copy()
    out[unsure(pixel_conf, pixel_threshold)] = IGNORE
    return out


def ignore_band(mask: np.ndarray, band: int) -> np.ndarray:
    """`mask` with the pixels within `band` pixels of a boundary between its classes set to IGNORE:
    a pseudo-mask's errors sit mostly on its boundaries, which the human masks then teach alone."""
    if band <= 0:
        return mask
    import cv2

    out, kernel = mask.copy(), np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    edge = np.zeros(mask.shape, bool)
    for k in np.unique(mask[mask != IGNORE]):
        region = (mask == k).astype(np.uint8)
        edge |= (cv2.dilate(region, kernel) > 0) & (cv2.erode(region, kernel) == 0)
    out[edge] = IGNORE
    return out


def accept(image_conf: np.ndarray, threshold: float) -> np.ndarray:
    """bool (N,): images whose confidence reaches `threshold`."""
    return np.asarray(image_conf, np.float64) >= threshold


def decide_pool(probs: list[np.ndarray], rule: str, threshold: float,
                pixel_threshold: float) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """One pass of the loop's per-image decision over a predicted pool.

    Returns:
        image_conf (N,) float, accepted (N,) bool, and each image's pseudo-mask (uint8, unsure
        pixels IGNORE), kept for the rejected images too so that a caller can score them.
    """
    conf, masks = np.empty(len(probs)), []
    for i, p in enumerate(probs):
        pred, pixel_conf, conf[i] = mask_confidence(p, rule, pixel_threshold)
        masks.append(pseudo_mask(pred, pixel_conf, pixel_threshold))
    return conf, accept(conf, threshold), masks
