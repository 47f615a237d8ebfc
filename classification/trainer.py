"""The epoch loop shared by head and finetune training.

ReduceLROnPlateau and early stopping watch validation loss (the seeds' factor 0.15 / patience 2
and patience 5 / min_delta 0.001); the best weights by validation macro-F1, ties broken by lower
loss, are restored at the end of a stage.
"""
from __future__ import annotations

import copy
import logging
import random
from typing import Callable

import numpy as np
import torch
from torch import nn

from classification.config import TrainConfig

_logger = logging.getLogger(__name__)

EpochCallback = Callable[[dict], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def create_optimizer(name: str, groups: list[dict], weight_decay: float) -> torch.optim.Optimizer:
    if name == "lbfgs":  # full batch, one group; `lr` is the line search's first step
        return torch.optim.LBFGS(groups, max_iter=20, history_size=20, line_search_fn="strong_wolfe")
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def run_stage(module: nn.Module, train_epoch: Callable[[int], float], evaluate: Callable[[], dict],
              optimizer: torch.optim.Optimizer, epochs: int, cfg: TrainConfig, stage: str,
              history: list[dict], on_epoch: EpochCallback | None, progress: bool) -> dict:
    """Train `epochs` epochs with plateau LR and early stopping; restore and return the best."""
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience)
    best, best_state, wait, best_loss = None, None, 0, float("inf")
    for epoch in _epochs(epochs, progress, stage):
        train_loss = train_epoch(epoch)
        val = evaluate()
        record = {"stage": stage, "epoch": epoch, "train_loss": train_loss,
                  "lr": optimizer.param_groups[0]["lr"], **{f"val_{k}": v for k, v in val.items()}}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        has_val = not np.isnan(val["loss"])
        if best is None or not has_val or _better(record, best):
            best, best_state = record, copy.deepcopy(module.state_dict())
        if not has_val:
            continue
        sched.step(val["loss"])
        if val["loss"] < best_loss - cfg.min_delta:
            best_loss, wait = val["loss"], 0
        else:
            wait += 1
            if wait >= cfg.patience:
                _logger.info("%s: early stop at epoch %d (best epoch %d)", stage, epoch, best["epoch"])
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    return best or {"stage": stage, "epoch": -1}


def _better(a: dict, b: dict) -> bool:
    if a["val_macro_f1"] != b["val_macro_f1"]:
        return a["val_macro_f1"] > b["val_macro_f1"]
    return a["val_loss"] < b["val_loss"]


def _epochs(n: int, progress: bool, stage: str):
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=f"train ({stage})", unit="epoch", leave=False)
