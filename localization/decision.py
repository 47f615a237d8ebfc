"""Per-image decisions over test-time views: pure numpy functions a pseudo-box loop calls.

With flip test-time augmentation each image has two predictions, the plain view's and the
mirrored view's mapped back unmirrored. Where the model knows where the object is, the two boxes
coincide; their IoU (`box_agreement`) is the box's confidence, as the class probability is the
label's. An image is accepted when both pass their thresholds (`decide`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from localization.boxes import box_iou


def box_agreement(boxes: np.ndarray) -> np.ndarray:
    """(V, N, 4) original-pixel boxes of V views -> (N,) the lowest IoU between the first view's
    box and another view's (1.0 with a single view)."""
    boxes = np.asarray(boxes, np.float64)
    assert boxes.ndim == 3 and boxes.shape[-1] == 4, boxes.shape
    if len(boxes) == 1:
        return np.ones(boxes.shape[1])
    return np.min([box_iou(boxes[0], other) for other in boxes[1:]], axis=0)


def merge_views(probs: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, N, K) probabilities and (V, N, 4) boxes -> their means over the views."""
    assert probs.shape[:2] == boxes.shape[:2], (probs.shape, boxes.shape)
    return probs.mean(axis=0), boxes.mean(axis=0)


@dataclass(frozen=True)
class BoxRule:
    min_confidence: float = 0.9   # class probability of the predicted label
    min_agreement: float = 0.85   # IoU between the views' boxes


def decide(confidence: np.ndarray, agreement: np.ndarray, rule: BoxRule) -> np.ndarray:
    """Accepted mask: the class confidence and the box agreement both pass their thresholds."""
    confidence, agreement = np.asarray(confidence), np.asarray(agreement)
    assert confidence.shape == agreement.shape, (confidence.shape, agreement.shape)
    return (confidence >= rule.min_confidence) & (agreement >= rule.min_agreement)


@dataclass
class Proposal:
    """Per pool image: the merged label, box (original pixels), class confidence and box
    agreement over the views, and whether the rule accepts it."""
    labels: np.ndarray
    boxes: np.ndarray
    confidence: np.ndarray
    agreement: np.ndarray
    accepted: np.ndarray


def propose(probs: np.ndarray, boxes: np.ndarray, ok: np.ndarray, rule: BoxRule) -> Proposal:
    """Pseudo-labels and pseudo-boxes from (V, N, K) probabilities and (V, N, 4) boxes of V views
    (view 0 the plain one); images that did not decode (`ok` False) are never accepted."""
    mean_probs, mean_boxes = merge_views(probs, boxes)
    confidence = mean_probs.max(axis=1)
    agreement = box_agreement(np.nan_to_num(boxes))
    accepted = decide(confidence, agreement, rule) & np.asarray(ok, bool)
    return Proposal(mean_probs.argmax(axis=1), mean_boxes, confidence, agreement, accepted)
