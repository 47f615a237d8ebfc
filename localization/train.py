"""`fit()`: seed 003's stages on cached trunk maps.

Stage 1 trains the heads on a frozen backbone; stage 2 also trains the last `unfreeze` blocks at
`backbone_lr_mult` of the heads' learning rate. Each stage has its own Adam (or AdamW / SGD) and
scheduler (ReduceLROnPlateau on validation mean IoU by default) and stops early when the mean IoU
has not improved for `patience` epochs. Stage 2 starts from stage 1's best epoch, and the weights
of the best epoch over both stages win.
Batch-norm statistics stay frozen: a few hundred images in small batches would only blur them.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from localization.boxes import to_model
from localization.config import LocalizeConfig, OptimizerConfig, SchedulerConfig
from localization.features import ViewMaps
from localization.heads import class_probs, run_heads, score, through, to_pixels
from localization.loss import create_criterion
from localization.model import Localizer, split

_logger = logging.getLogger(__name__)

OPTIMIZERS = {
    "adam": lambda groups, c: torch.optim.Adam(groups, weight_decay=c.weight_decay),
    "adamw": lambda groups, c: torch.optim.AdamW(groups, weight_decay=c.weight_decay),
    "sgd": lambda groups, c: torch.optim.SGD(groups, momentum=0.9, weight_decay=c.weight_decay),
}
SCHEDULERS = {
    "plateau": lambda opt, c, epochs: torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=c.factor, patience=c.patience),
    "cosine": lambda opt, c, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1)),
    "none": lambda opt, c, epochs: None,
}


@dataclass
class Material:
    """What a fit trains or validates on, row for row: cached views of the images, their labels,
    boxes in original pixels (NaN rows: no box) and sample weights."""
    views: ViewMaps
    labels: np.ndarray
    boxes: np.ndarray
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one record per epoch
    best: dict = field(default_factory=dict)           # the record of the epoch whose weights were kept
    train_seconds: float = 0.0
    train_images: int = 0                              # image-views seen by the optimiser


def cut_for(cfg: LocalizeConfig) -> int:
    """Blocks after the cached trunk: the ones stage 2 unfreezes (0 for heads only)."""
    return cfg.training.unfreeze


def fit(model: Localizer, cfg: LocalizeConfig, train: Material, val: Material | None) -> FitResult:
    """Train `model` in stages and leave it holding the best epoch's weights."""
    tail = split(model, cut_for(cfg))[1]
    result, best_state = FitResult(), None
    stages = [("heads", cfg.training.head_epochs, False)]
    if cfg.training.unfreeze:
        stages.append(("unfreeze", cfg.training.epochs, True))
    rng = np.random.default_rng(cfg.training.seed)
    for stage, epochs, unfrozen in stages:
        if best_state is not None:  # as seed 003 did: each stage starts from the best model so far
            model.load_state_dict(best_state)
        _freeze(model, tail, unfrozen)
        opt = _optimizer(model, tail if unfrozen else None, cfg.optimizer)
        sched = SCHEDULERS[cfg.scheduler.name](opt, cfg.scheduler, epochs)
        # while the tail is frozen, its output for each cached view is fixed: compute it once
        part, data = (tail, (train, val)) if unfrozen or epochs == 0 else (nn.Identity(), _frozen(tail, train, val))
        stale = 0
        for epoch in range(epochs):
            record = _epoch(model, part, cfg, data[0], data[1], opt, rng, result)
            record.update(stage=stage, epoch=len(result.history) + 1, lr=opt.param_groups[0]["lr"])
            result.history.append(record)
            _logger.info("%s epoch %d: %s", stage, record["epoch"], _brief(record))
            if best_state is None or record["monitor"] > result.best["monitor"] + 1e-4:
                result.best, best_state, stale = dict(record), copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
            _step(sched, record["monitor"])
            if stale >= cfg.training.patience:
                _logger.info("%s: no better mean IoU for %d epochs, stopping", stage, stale)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    _freeze(model, tail, False)
    return result


def _frozen(tail: nn.Module, *sets: Material | None) -> list[Material | None]:
    """`sets` with their cached views passed through the frozen tail (identity tails: as they are)."""
    if isinstance(tail, nn.Identity):
        return list(sets)
    out = []
    for m in sets:
        if m is None:
            out.append(None)
            continue
        maps, shape = through(tail.eval(), m.views.maps, m.views.shape)
        out.append(replace(m, views=replace(m.views, maps=maps, shape=shape)))
    return out


def _epoch(model, tail, cfg, train: Material, val, opt, rng, result: FitResult) -> dict:
    start = time.perf_counter()
    loss = _train_epoch(model, tail, cfg, train, opt, rng)
    result.train_seconds += time.perf_counter() - start
    result.train_images += int(train.views.ok.sum())
    record = {"train_loss": loss}
    if val is not None and len(val):
        record.update({f"val_{k}": v for k, v in evaluate(model, tail, cfg, val).items()})
        record["monitor"] = record["val_mean_iou"]
    else:  # nothing held out: the training loss decides
        record["monitor"] = -loss
    return record


def _train_epoch(model, tail, cfg: LocalizeConfig, train: Material, opt, rng) -> float:
    size, views = cfg.model.img_size, train.views
    rows = rng.permutation(np.flatnonzero(views.ok))
    pick = rng.integers(len(views.maps), size=len(train))  # one cached view per image this epoch
    targets = to_model(np.nan_to_num(train.boxes), views.geos[pick, np.arange(len(train))], size)
    targets[np.isnan(train.boxes[:, 0])] = np.nan
    weights = np.ones(len(train)) if train.weights is None else train.weights
    criterion = create_criterion(cfg.criterion)
    model.cls_head.train()
    model.box_head.train()
    total, seen = 0.0, 0
    for start in range(0, len(rows), cfg.training.batch_size):
        b = rows[start:start + cfg.training.batch_size]
        x = torch.from_numpy(views.maps[pick[b], b].astype(np.float32)).reshape(-1, *views.shape)
        with torch.set_grad_enabled(any(p.requires_grad for p in tail.parameters())):
            maps = tail(x)
        logits, boxes = model.heads(maps)
        loss, _ = criterion(logits, boxes, torch.from_numpy(train.labels[b]),
                            torch.from_numpy(targets[b]).float(), torch.from_numpy(weights[b]).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, seen = total + float(loss.detach()) * len(b), seen + len(b)
    return total / max(seen, 1)


def evaluate(model: Localizer, tail: nn.Module, cfg: LocalizeConfig, data: Material, view: int = 0) -> dict:
    """Loss, accuracy, mean IoU and IoU >= 0.5 share on view `view` (the eval view) of `data`."""
    ok = data.views.ok
    logits, boxes = run_heads(model, tail, data.views.maps[view][ok], data.views.shape)
    geos = data.views.geos[view][ok]
    criterion = create_criterion(cfg.criterion)
    truth = np.where(np.isnan(data.boxes[ok]), np.nan, to_model(np.nan_to_num(data.boxes[ok]), geos,
                                                                  cfg.model.img_size))
    loss, _ = criterion(torch.from_numpy(logits), torch.from_numpy(boxes), torch.from_numpy(data.labels[ok]),
                        torch.from_numpy(truth).float())
    probs = class_probs(logits, cfg.criterion.class_loss)
    out = score(probs, to_pixels(boxes, geos, cfg.model.img_size), data.labels[ok], data.boxes[ok])
    return {"loss": float(loss), **{k: out[k] for k in ("accuracy", "mean_iou", "iou50")}}


def _freeze(model: Localizer, tail: nn.Module, unfrozen: bool) -> None:
    model.backbone.requires_grad_(False)
    model.backbone.eval()  # frozen batch-norm statistics, in both stages
    if unfrozen:
        tail.requires_grad_(True)
    for head in model.head_modules():
        head.requires_grad_(True)


def _optimizer(model: Localizer, tail: nn.Module | None, cfg: OptimizerConfig):
    groups = [{"params": [p for h in model.head_modules() for p in h.parameters()], "lr": cfg.lr}]
    if tail is not None:
        groups.append({"params": list(tail.parameters()), "lr": cfg.lr * cfg.backbone_lr_mult})
    return OPTIMIZERS[cfg.name](groups, cfg)


def _step(sched, monitor: float) -> None:
    if sched is None:
        return
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.step(monitor)
    else:
        sched.step()


def _brief(record: dict) -> str:
    keys = ("train_loss", "val_loss", "val_accuracy", "val_mean_iou")
    return ", ".join(f"{k} {record[k]:.4f}" for k in keys if k in record)


__all__ = ["FitResult", "Material", "SchedulerConfig", "cut_for", "evaluate", "fit"]
