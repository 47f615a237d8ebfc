"""Classifier heads by name: `HEADS`, what `TrainConfig.head` names.

Each entry puts a fresh head for `num_classes` on a timm model in place of its classifier. torch
is imported when one is built, so checking a config against this dict needs no torch.
"""
from __future__ import annotations

from classification.registry import lookup


def linear(model, num_classes: int, hidden: int, norm: bool = True) -> None:
    """timm's own linear classifier, zero-initialised: it starts from the minimum-norm solution,
    where timm's wide random init leaves noise in the many directions a few labelled images
    never constrain. With `norm`, a `FeatureNorm` comes first."""
    from torch import nn

    layer = model.get_classifier()
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    if norm:
        _replace_classifier(model, _normed(layer.in_features, layer))


def mlp(model, num_classes: int, hidden: int, norm: bool = True) -> None:
    """[FeatureNorm ->] linear -> ReLU -> dropout 0.2 -> linear, `hidden` wide."""
    from torch import nn

    width = model.get_classifier().in_features
    model.reset_classifier(0)
    layers = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(0.2),
                           nn.Linear(hidden, num_classes))
    _replace_classifier(model, _normed(width, layers) if norm else layers)


def _normed(width: int, head):
    from torch import nn

    from classification.featurenorm import FeatureNorm

    return nn.Sequential(FeatureNorm(width), head)


def _replace_classifier(model, head) -> None:
    setattr(model, model.pretrained_cfg.get("classifier", "classifier"), head)


HEADS = {"linear": linear, "mlp": mlp}


def attach_head(model, name: str, num_classes: int, hidden: int, norm: bool = True) -> None:
    lookup("head", HEADS, name)(model, num_classes, hidden, norm)
