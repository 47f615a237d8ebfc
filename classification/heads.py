"""Classifier heads by name: `HEADS`, what `TrainConfig.head` names.

Each entry puts a fresh head for `num_classes` on a timm model in place of its classifier. torch
is imported when one is built, so checking a config against this dict needs no torch.
"""
from __future__ import annotations

from classification.registry import lookup


def linear(model, num_classes: int, hidden: int) -> None:
    """timm's own linear classifier, zero-initialised: it starts from the minimum-norm solution,
    where timm's wide random init leaves noise in the many directions a few labelled images
    never constrain."""
    from torch import nn

    nn.init.zeros_(model.get_classifier().weight)
    nn.init.zeros_(model.get_classifier().bias)


def mlp(model, num_classes: int, hidden: int) -> None:
    """Linear -> ReLU -> dropout 0.2 -> linear, `hidden` wide."""
    from torch import nn

    width = model.get_classifier().in_features
    model.reset_classifier(0)
    model.classifier = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True),
                                     nn.Dropout(0.2), nn.Linear(hidden, num_classes))


HEADS = {"linear": linear, "mlp": mlp}


def attach_head(model, name: str, num_classes: int, hidden: int) -> None:
    lookup("head", HEADS, name)(model, num_classes, hidden)
