"""IoU and Dice from a confusion matrix accumulated over a whole set (not averaged per image), per
class, with their mean over the defect classes (background, index 0, excluded) and over all.
IGNORE pixels in the truth count nowhere."""
from __future__ import annotations

import numpy as np

from segmentation.data import IGNORE


def confusion(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) pixel counts, rows = truth, columns = prediction."""
    assert truth.shape == pred.shape, (truth.shape, pred.shape)
    keep = truth != IGNORE
    idx = truth[keep].astype(np.int64) * n_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores(cm: np.ndarray, classes: list[str]) -> dict:
    """Per-class IoU and Dice, and the means `miou`/`dice` (defect classes), `miou_all`/`dice_all`.

    A class with no pixel in truth or prediction has no defined score and is left out of the means.
    """
    tp = np.diag(cm).astype(np.float64)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    out = {"miou": _nanmean(iou[1:]), "dice": _nanmean(dice[1:]),
           "miou_all": _nanmean(iou), "dice_all": _nanmean(dice),
           "pixel_accuracy": float(tp.sum() / max(cm.sum(), 1))}
    out["per_class"] = {c: {"iou": _num(iou[i]), "dice": _num(dice[i]), "pixels": int(cm[i].sum())}
                        for i, c in enumerate(classes)}
    return out


def image_iou(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """One image's mean IoU over the defect classes present in its truth or prediction (1.0 when
    both are all background): the ranking key for the best/worst pictures."""
    cm = confusion(truth, pred, n_classes)
    tp = np.diag(cm)[1:].astype(np.float64)
    union = (cm.sum(0) + cm.sum(1))[1:] - tp
    seen = union > 0
    return float((tp[seen] / union[seen]).mean()) if seen.any() else 1.0


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def pseudo_mask_scores(masks: list[np.ndarray], truth: list[np.ndarray], classes: list[str]) -> dict:
    """How good pseudo-masks are: mean IoU (defect classes) against the truth over the pixels they
    keep (IGNORE pixels left out), and the share of pixels they keep."""
    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    for m, t in zip(masks, truth):
        keep = m != IGNORE
        cm += confusion(np.where(keep, t, IGNORE), np.where(keep, m, 0), k)
    kept = float(np.mean([np.mean(m != IGNORE) for m in masks])) if masks else 0.0
    return {"pseudo_miou": scores(cm, classes)["miou"], "pixels_kept": kept}
