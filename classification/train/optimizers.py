"""Optimisers by name: `OPTIMIZERS`, what `TrainConfig.optimizer` names (besides `auto`).

Each entry takes the parameter groups (each with its own `lr`) and the weight decay; torch is
imported when one is built, so checking a config against this dict needs no torch.
"""
from __future__ import annotations

from classification.registry import lookup


def adamw(groups: list[dict], weight_decay: float):
    import torch

    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def sgd(groups: list[dict], weight_decay: float):
    """SGD with Nesterov momentum 0.9."""
    import torch

    return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=weight_decay)


def lbfgs(groups: list[dict], weight_decay: float):
    """Full batch, one group; `lr` is the line search's first step. Its L2 penalty is the head
    trainer's (`TrainConfig.l2`), not a decoupled weight decay."""
    import torch

    return torch.optim.LBFGS(groups, max_iter=20, history_size=20, line_search_fn="strong_wolfe")


OPTIMIZERS = {"adamw": adamw, "sgd": sgd, "lbfgs": lbfgs}


def create_optimizer(name: str, groups: list[dict], weight_decay: float):
    return lookup("optimizer", OPTIMIZERS, name)(groups, weight_decay)
