"""`FeatureNorm`: what a head sees of the backbone's pooled features when labels are few.

The pooled features of an ImageNet backbone are non-negative and heavy-tailed: a few large
activations dominate every dot product and distance. A power transform (square root) tames them,
L2 normalisation puts every image on the unit sphere, and subtracting the training images' mean
removes the direction all ImageNet features share, so what is left separates the classes. (The
"PT" of PT-MAP, Hu et al. 2021, plus centring; worth about two points with 4 labels per class.)

It is the first layer of the classifier head, so the centre travels with the weights: a checkpoint,
an ONNX export of the head or a prediction applies exactly what training applied.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

POWER = 0.5
EPS = 1e-6  # keeps the square root's gradient finite at 0 (finetune mode trains through it)


class FeatureNorm(nn.Module):
    """x -> sqrt(D) * normalise(normalise(max(x, 0) ** 0.5) - centre); the centre is fitted, not
    trained. The sqrt(D) scale (unit variance per dimension on average) keeps logits, and so the
    confidences a threshold reads, on the scale raw features gave at the same L2 penalty: unit
    vectors under `l2: 0.01` never reached 0.8 confidence with 4 labels per class."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("centre", torch.zeros(dim))
        self.scale = float(dim) ** 0.5

    @staticmethod
    def spherical(x: torch.Tensor) -> torch.Tensor:
        """The power transform and the first normalisation (no centring)."""
        return nn.functional.normalize(x.clamp_min(0).add(EPS).pow(POWER), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * nn.functional.normalize(self.spherical(x) - self.centre, dim=-1)


def feature_norm(head: nn.Module) -> FeatureNorm | None:
    """The head's `FeatureNorm`, if it has one (checkpoints from before it existed do not)."""
    return next((m for m in head.modules() if isinstance(m, FeatureNorm)), None)


@torch.no_grad()
def fit_centre(head: nn.Module, blocks) -> None:
    """Set the centre to the mean spherical feature over `blocks`: (features (n, D), weights (n,))
    pairs, so a large training set is read one block at a time. A head without one is left alone."""
    norm = feature_norm(head)
    if norm is None:
        return
    total, mass = torch.zeros_like(norm.centre, dtype=torch.float64), 0.0
    for feats, weights in blocks:
        total += (FeatureNorm.spherical(feats.float()) * weights[:, None]).sum(0).double()
        mass += float(weights.sum())
    norm.centre.copy_((total / max(mass, 1e-12)).float())


def eval_slot_weights(n: int, n_slots: int, rows: np.ndarray) -> np.ndarray:
    """(n, n_slots) weights that count the eval view (slot 0) of `rows` once each."""
    weights = np.zeros((n, n_slots), np.float32)
    weights[rows, 0] = 1.0
    return weights
