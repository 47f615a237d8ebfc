"""Segmentation losses on (B, C, H, W) logits and (B, H, W) class indices, where IGNORE pixels
(unsure pseudo-mask pixels, padding) count in no term.

All three read the logits through one softmax, so that every model, whatever it was trained with,
gives probabilities that sum to one: the confidence of a pseudo-mask means the same thing.
- dicebce: binary cross-entropy of each class's probability against its one-hot target, plus
  soft Dice (seed 002's best);
- tversky: 1 - Tversky index with alpha 0.1 (false positives), beta 0.9 (false negatives): a
  recall-leaning Dice for small defects (seed 002);
- cedice: cross-entropy plus soft Dice.
Dice and Tversky are computed per class over the whole batch and averaged over the classes that
appear in the batch's targets (a class absent everywhere has nothing to overlap).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from segmentation.data import IGNORE

_EPS = 1.0  # additive smoothing of Dice/Tversky ratios, in pixels


def _parts(logits: torch.Tensor, target: torch.Tensor):
    """(probs, one-hot targets, valid-pixel weights), all (B, C, H, W) except valid (B, 1, H, W)."""
    assert logits.ndim == 4 and target.shape == (logits.shape[0], *logits.shape[2:]), \
        (logits.shape, target.shape)
    valid = (target != IGNORE).unsqueeze(1)
    safe = torch.where(valid.squeeze(1), target, torch.zeros_like(target))
    onehot = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    return logits.float().softmax(1), onehot.float(), valid.float()


def _overlap(probs, onehot, valid, alpha: float, beta: float) -> torch.Tensor:
    """1 - mean over present classes of TP / (TP + alpha FP + beta FN) (alpha = beta = 0.5: Dice)."""
    dims = (0, 2, 3)
    tp = (probs * onehot * valid).sum(dims)
    fp = (probs * (1 - onehot) * valid).sum(dims)
    fn = ((1 - probs) * onehot * valid).sum(dims)
    index = (tp + _EPS) / (tp + alpha * fp + beta * fn + _EPS)
    present = (onehot * valid).sum(dims) > 0
    if not present.any():
        return probs.sum() * 0.0  # nothing labelled in this batch: a zero that keeps the graph
    return 1 - index[present].mean()


def _mean_over_valid(per_pixel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)


def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probs, onehot, valid = _parts(logits, target)
    logp = logits.float().log_softmax(1)
    log1mp = torch.log1p(-probs.clamp(max=1 - 1e-6))
    bce = -(onehot * logp + (1 - onehot) * log1mp).mean(1, keepdim=True)
    return _mean_over_valid(bce, valid) + _overlap(probs, onehot, valid, 0.5, 0.5)


def tversky(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.1, beta: float = 0.9) -> torch.Tensor:
    probs, onehot, valid = _parts(logits, target)
    return _overlap(probs, onehot, valid, alpha, beta)


def ce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probs, onehot, valid = _parts(logits, target)
    ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum")
    return ce / valid.sum().clamp_min(1.0) + _overlap(probs, onehot, valid, 0.5, 0.5)


LOSSES = {"dicebce": dice_bce, "tversky": tversky, "cedice": ce_dice}


def create_loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return LOSSES[name]
