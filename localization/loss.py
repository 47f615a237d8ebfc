"""The localisation criterion: class loss + box_weight x smooth-L1 (+ giou_weight x GIoU).

Boxes are normalised corners in [0, 1]. Images without a box (a class label only, or a box that
augmentation moved out of sight) add no box loss; per-sample weights scale both parts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from classification.losses import create_loss
from localization.config import CriterionConfig

MIN_AREA = 1e-4  # normalised area under which a target box counts as out of sight


def create_criterion(cfg: CriterionConfig):
    """loss(logits, boxes, y, target, weight) -> (total, {"class", "box", "giou"} floats).

    `target` is (B, 4) with NaN rows for images without a box; `weight` is (B,) or None."""
    class_loss = create_loss(cfg.class_loss)

    def loss(logits, boxes, y, target, weight=None):
        weight = torch.ones(len(y)) if weight is None else weight
        cls = class_loss(logits, y, weight)
        area = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
        has = ~torch.isnan(target[:, 0]) & (area > MIN_AREA)
        parts = {"class": float(cls.detach())}
        total = cls
        if has.any():
            w = weight[has]
            l1 = F.smooth_l1_loss(boxes[has], target[has], beta=cfg.beta, reduction="none").mean(dim=1)
            box = (l1 * w).sum() / w.sum().clamp_min(1e-12)
            total = total + cfg.box_weight * box
            parts["box"] = float(box.detach())
            if cfg.giou_weight:
                giou = (generalized_box_iou_loss(boxes[has], target[has]) * w).sum() / w.sum().clamp_min(1e-12)
                total = total + cfg.giou_weight * giou
                parts["giou"] = float(giou.detach())
        return total, parts

    return loss
