"""One training stage, the epoch loop that head, tail and finetune training share.

ReduceLROnPlateau and early stopping watch validation loss (the seeds' factor 0.15 / patience 2
and patience 5 / min_delta 0.001); the best weights by validation macro-F1, ties broken by lower
loss, are restored at the end of a stage.
"""
from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from classification.context import FitContext
from classification.progress import track

_logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Stage:
    name: str                               # recorded in every epoch's record: head, tail, stage1, stage2
    epochs: int                             # at most this many; early stopping may end it sooner
    train_epoch: Callable[[int], float | dict]  # trains epoch i, returns its mean training loss (or a
                                                # record {"loss": ..., more}: aux_rotation's rot_loss)
    evaluate: Callable[[], dict]            # validation loss, accuracy, macro_f1 (NaN without validation)
    optimizer: torch.optim.Optimizer        # its first group's lr is recorded; the plateau schedule lowers it


def run_stage(ctx: FitContext, module: nn.Module, stage: Stage, history: list[dict]) -> dict:
    """Train `stage.epochs` epochs with plateau LR and early stopping; restore and return the best.
    Each epoch's record goes to `history` and to `ctx.on_epoch`."""
    cfg, optimizer = ctx.cfg, stage.optimizer
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience)
    best, best_state, wait, best_loss = None, None, 0, float("inf")
    for epoch in track(range(stage.epochs), ctx.progress, f"train ({stage.name})", "epoch"):
        train = stage.train_epoch(epoch)
        train = train if isinstance(train, dict) else {"loss": train}
        val = stage.evaluate()
        record = {"stage": stage.name, "epoch": epoch, **{f"train_{k}": v for k, v in train.items()},
                  "lr": optimizer.param_groups[0]["lr"], **{f"val_{k}": v for k, v in val.items()}}
        history.append(record)
        if ctx.on_epoch is not None:
            ctx.on_epoch(record)
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
                _logger.info("%s: early stop at epoch %d (best epoch %d)", stage.name, epoch, best["epoch"])
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    return best or {"stage": stage.name, "epoch": -1}


def _better(a: dict, b: dict) -> bool:
    if a["val_macro_f1"] != b["val_macro_f1"]:
        return a["val_macro_f1"] > b["val_macro_f1"]
    return a["val_loss"] < b["val_loss"]
