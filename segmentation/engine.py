"""`fit()`: train a UNet in two stages, as the classifier's finetune mode does.

1. `decoder`: the pretrained encoder frozen (weights and batch-norm statistics), the randomly
   initialised decoder and head trained alone, so their first large gradients do not wreck
   the encoder's features;
2. `full`: the whole network, with separate encoder and decoder learning rates (seed 002).
Each stage: Adam, ReduceLROnPlateau on validation loss, early stopping on validation mean IoU
(defect classes); the weights of the best validation mean IoU over both stages are kept.
With `cfg.ema`, validation scores a moving average of the weights, and that average is what is kept.
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

from classification.config import resolve_device
from classification.errors import InputError
from segmentation.confidence import ignore_band
from segmentation.config import SegConfig
from segmentation.losses import create_loss
from segmentation.metrics import confusion, scores
from segmentation.models import create_segmenter, decoder_parameters, encoder_parts, input_stats
from segmentation.transforms import PairDataset, eval_pair, train_transform

_logger = logging.getLogger(__name__)

Arrays = list[tuple[np.ndarray, np.ndarray]]  # decoded (image RGB uint8, mask uint8) pairs
EpochCallback = Callable[[dict], None]


@dataclass
class SegFitResult:
    """model: the best weights (CPU, eval mode); history: one record per epoch; best: its record."""
    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    history: list[dict]
    best: dict
    n_train: int
    train_seconds: float


@dataclass
class _Run:
    """What one fit's stages share."""
    cfg: SegConfig
    model: nn.Module
    loader: torch.utils.data.DataLoader
    val: list[tuple[torch.Tensor, torch.Tensor]]
    classes: list[str]
    device: str
    history: list[dict]
    on_epoch: EpochCallback | None
    progress: bool
    best: dict | None = None
    best_state: dict | None = None
    seconds: float = 0.0
    ema: nn.Module | None = None  # the stage's running average of the weights, when cfg.ema

    def scored(self) -> nn.Module:
        """The weights validation scores and the best checkpoint keeps: the average, if any."""
        return self.model if self.ema is None else self.ema.module


def fit(cfg: SegConfig, train: Arrays, val: Arrays, classes: list[str], *,
        pseudo: Arrays = (), progress: bool = False,
        on_epoch: EpochCallback | None = None) -> SegFitResult:
    """Train on `train` (augmented with `cfg.augment`) and `pseudo` (pseudo-masks, augmented with
    `cfg.pseudo_augment`), select on `val` (may be empty: the last epoch is then kept)."""
    if not train and not pseudo:
        raise InputError("no training pairs")
    _seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model = create_segmenter(cfg.encoder, len(classes), cfg.weights, cfg.decoder_channels())
    mean, std = input_stats(model)
    model = model.to(device=device, memory_format=torch.channels_last)
    run = _Run(cfg, model, _loader(cfg, train, pseudo, mean, std), val_batches(val, mean, std, cfg.batch_size),
               classes, device, [], on_epoch, progress)
    if cfg.head_epochs:
        _stage(run, "decoder", cfg.head_epochs, [{"params": decoder_parameters(model), "lr": cfg.head_lr}])
    if cfg.epochs:
        enc = [p for m in encoder_parts(model, cfg.train_stages)[1] for p in m.parameters(recurse=False)]
        _stage(run, "full", cfg.epochs, [{"params": enc, "lr": cfg.encoder_lr},
                                         {"params": decoder_parameters(model), "lr": cfg.decoder_lr}])
    return SegFitResult(model.cpu().eval(), mean, std, run.history, run.best, len(train) + len(pseudo),
                        run.seconds)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _loader(cfg: SegConfig, train: Arrays, pseudo: Arrays, mean, std) -> torch.utils.data.DataLoader:
    parts = [PairDataset(train, train_transform(cfg.size, mean, std, cfg.augment, cfg.seed))]
    if pseudo:
        pseudo = [(img, ignore_band(mask, cfg.pseudo_band)) for img, mask in pseudo]
        parts.append(PairDataset(pseudo, train_transform(cfg.size, mean, std, cfg.pseudo_augment,
                                                         (cfg.seed + 1) % 2**32)))
    data = torch.utils.data.ConcatDataset(parts)
    n = cfg.batches_per_epoch * cfg.batch_size or len(data)
    gen = torch.Generator().manual_seed(cfg.seed)
    if pseudo and train and cfg.pseudo_share:
        # pseudo-masks drawn as `pseudo_share` of the samples however many there are, so the
        # human masks keep their say as the accepted set grows
        weights = [(1 - cfg.pseudo_share) / len(train)] * len(train) + [cfg.pseudo_share / len(pseudo)] * len(pseudo)
        sampler = torch.utils.data.WeightedRandomSampler(weights, n, replacement=True, generator=gen)
    else:
        sampler = torch.utils.data.RandomSampler(data, num_samples=n, generator=gen)
    # a last batch of one image would give batch norm a single sample per channel
    return torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, sampler=sampler,
                                       drop_last=n > cfg.batch_size, num_workers=cfg.workers,
                                       worker_init_fn=_seed_worker, generator=gen)


def val_batches(pairs: Arrays, mean, std, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Whole images, padded, stacked into batches of one shape (most sets have one size)."""
    by_shape: dict[tuple, list] = {}
    for img, mask in pairs:
        x, y = eval_pair(img, mask, mean, std)
        by_shape.setdefault(tuple(x.shape), []).append((x, y))
    return [(torch.stack([x for x, _ in group[i:i + batch_size]]), torch.stack([y for _, y in group[i:i + batch_size]]))
            for group in by_shape.values() for i in range(0, len(group), batch_size)]


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _stage(run: _Run, stage: str, epochs: int, groups: list[dict]) -> None:
    cfg, model = run.cfg, run.model
    frozen = encoder_parts(model, 0 if stage == "decoder" else cfg.train_stages)[0]
    for m in frozen:
        m.requires_grad_(False)
    optimizer = torch.optim.Adam([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
    run.ema = _average(model, cfg.ema)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience)
    wait, stage_best = 0, -1.0
    for epoch in _epochs(epochs, run.progress, stage):
        record = {"stage": stage, "epoch": len(run.history), **_train_epoch(run, optimizer, frozen),
                  "lr": optimizer.param_groups[-1]["lr"], **_evaluate(run)}
        run.history.append(record)
        if run.on_epoch is not None:
            run.on_epoch(record)
        if run.best is None or not run.val or _better(record, run.best):
            run.best, run.best_state = record, copy.deepcopy(run.scored().state_dict())
        if not run.val:
            continue
        sched.step(record["val_loss"])
        wait = 0 if record["val_miou"] > stage_best else wait + 1
        stage_best = max(stage_best, record["val_miou"])
        if cfg.patience and wait >= cfg.patience:
            _logger.info("%s: early stop at epoch %d (best epoch %d)", stage, record["epoch"], run.best["epoch"])
            break
    for p in model.parameters():
        p.requires_grad_(True)
    run.ema = None
    model.load_state_dict(run.best_state)  # the next stage starts from the best weights so far


def _train_epoch(run: _Run, optimizer: torch.optim.Optimizer, frozen: list[nn.Module]) -> dict:
    import time

    model, loss_fn = run.model, create_loss(run.cfg.loss)
    model.train()
    for m in frozen:
        m.eval()  # frozen parts keep their pretrained batch-norm statistics too
    cuda = run.device.startswith("cuda")
    total, n, start = 0.0, 0, time.perf_counter()
    for x, y in run.loader:
        x = x.to(run.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(run.device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if run.ema is not None:
            run.ema.update_parameters(model)
        total, n = total + float(loss.detach()) * len(x), n + len(x)
    seconds = time.perf_counter() - start
    run.seconds += seconds
    return {"train_loss": total / max(n, 1), "train_img_s": n / max(seconds, 1e-9)}


@torch.inference_mode()
def _evaluate(run: _Run) -> dict:
    if not run.val:
        return {"val_loss": float("nan"), "val_miou": float("nan"), "val_dice": float("nan")}
    model, loss_fn, k = run.scored().eval(), create_loss(run.cfg.loss), len(run.classes)
    cm, total, n = np.zeros((k, k), np.int64), 0.0, 0
    for x, y in run.val:
        logits = model(x.to(run.device).contiguous(memory_format=torch.channels_last)).float()
        total, n = total + float(loss_fn(logits, y.to(run.device))) * len(x), n + len(x)
        cm += confusion(y.numpy(), logits.argmax(1).cpu().numpy(), k)
    s = scores(cm, run.classes)
    return {"val_loss": total / n, "val_miou": s["miou"], "val_dice": s["dice"],
            "val_miou_all": s["miou_all"]}


def _average(model: nn.Module, decay: float) -> nn.Module | None:
    """A moving average of the weights and batch-norm statistics (None for decay 0)."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(model, multi_avg_fn=_ema_update(decay), use_buffers=True)


def _ema_update(decay: float):
    """Exponential moving average whose decay warms up as (1 + n) / (10 + n) to `decay`, so
    the average follows the weights in a short fit instead of lagging behind its first steps."""
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1 + float(n)) / (10 + float(n)))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1 - d)
        else:  # integer counters (batch norm's num_batches_tracked) follow the model
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)
    return update


def _better(a: dict, b: dict) -> bool:
    a_iou, b_iou = np.nan_to_num(a["val_miou"], nan=-1.0), np.nan_to_num(b["val_miou"], nan=-1.0)
    if a_iou != b_iou:
        return a_iou > b_iou
    return a["val_loss"] < b["val_loss"]


def _epochs(n: int, progress: bool, stage: str):
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=f"train ({stage})", unit="epoch", leave=False)
