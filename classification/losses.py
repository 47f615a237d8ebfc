"""Losses, each returning one value per sample so callers can weight samples.

Registered by name in `LOSSES`; an unknown name lists the valid ones. torch is imported when a loss
runs, not when this module loads: `TrainConfig` checks its `loss` against `LOSSES` without torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from classification.registry import lookup

if TYPE_CHECKING:
    import torch


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    import torch.nn.functional as F

    return F.cross_entropy(logits, y, reduction="none", label_smoothing=smoothing)


def bce_one_hot(logits: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy against one-hot targets (seed 000's multilabel-style head)."""
    import torch.nn.functional as F

    target = F.one_hot(y, logits.shape[1]).float()
    target = target * (1 - smoothing) + smoothing / logits.shape[1]
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(dim=1)


def focal(logits: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross-entropy down-weighted on easy samples."""
    import torch.nn.functional as F

    logp = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return -((1 - logp.exp()) ** gamma) * logp


LOSSES = {"ce": cross_entropy, "bce": bce_one_hot, "focal": focal}


def create_loss(name: str, smoothing: float = 0.0):
    """The loss `name` as `loss(logits, y, weight=None)`: the (weighted) mean over samples.

    Raises:
        InputError: an unknown name (the message lists the valid ones).
    """
    fn = lookup("loss", LOSSES, name)

    def loss(logits, y, weight=None):
        per_sample = fn(logits, y, smoothing)
        if weight is None:
            return per_sample.mean()
        return (per_sample * weight).sum() / weight.sum().clamp_min(1e-12)

    return loss
