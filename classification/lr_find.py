"""`lr_find()`: the learning-rate range test (Smith 2015, "Cyclical Learning Rates"; fastai's
`lr_find`). A fresh head trains one minibatch per step while the learning rate grows
geometrically from `start` to `end`; the smoothed loss against the LR shows where training
makes progress and where it diverges.

It runs in head mode only: the backbone is frozen and its features come from the cache, so a
100-step sweep costs seconds once the features exist. L-BFGS has no learning rate to find (its
line search picks the step), so a config asking for it sweeps AdamW, the head's other default.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from classification.cache import FeatureCache
from classification.config import TrainConfig, resolve_device
from classification.context import FitContext
from classification.data import ImageSet
from classification.errors import InputError
from classification.fileio import write_figure
from classification.losses import create_loss
from classification.models import classifier_module, create_classifier
from classification.train.optimizers import create_optimizer
from classification.train.stage import seed_everything
from classification.train.views import ViewStore, training_views
from classification.transforms import data_config

_logger = logging.getLogger(__name__)


@dataclass
class LRFindResult:
    """lrs and losses: one entry per step run (losses smoothed); suggested: the LR to train with."""
    lrs: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray
    suggested: float
    optimizer: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"suggested": self.suggested, "optimizer": self.optimizer, "steps_run": len(self.lrs),
                "lrs": self.lrs.tolist(), "losses": self.losses.tolist(),
                "raw_losses": self.raw_losses.tolist(),
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}


@dataclass(frozen=True)
class Curve:
    """How the sweep reads its loss curve.

    beta: smoothing of the loss (exponential moving average, bias-corrected). The divergence check
        must use the causal average, which lags ~beta/(1-beta) steps; the recorded curve, and so
        the suggestion, is averaged forwards and then backwards, which cancels the lag (fastai's
        causal 0.98 lags ~50 steps, half of a 100-step sweep, and so suggests LRs too large).
    diverge: stop once the smoothed loss exceeds this multiple of its best value.
    """
    beta: float = 0.9
    diverge: float = 4.0


def lr_find(cfg: TrainConfig, images: ImageSet, cache: FeatureCache, start: float = 1e-6,
            end: float = 1.0, steps: int = 100, progress: bool = False, curve: Curve = Curve()) -> LRFindResult:
    """Sweep the head's learning rate from `start` to `end` over `steps` minibatches.

    Raises:
        InputError: bad sweep bounds, finetune mode, tail blocks, or no decodable image.
    """
    _check_sweep(start, end, steps, curve.beta)
    device = resolve_device(cfg.device)
    if cfg.resolved_mode(device) != "head" or cfg.tail_blocks:
        raise InputError("lr-find runs in head mode (frozen backbone, no tail blocks)")
    if len(images) == 0:
        raise InputError("no images to sweep the learning rate on")
    seed_everything(cfg.seed)
    model = create_classifier(cfg.model, len(images.classes), cfg.weights, cfg.head, cfg.hidden,
                              norm=cfg.feature_norm)
    ctx = FitContext(model, cfg, data_config(model, cfg.img_size), cache, device, progress)
    views, ok, skipped = training_views(ctx, images, np.zeros(len(images), bool))
    rows = np.flatnonzero(ok)
    with views:
        if len(rows) == 0:
            raise InputError("none of the images could be decoded")
        name = cfg.resolved_optimizer("head")
        name = "adamw" if name == "lbfgs" else name
        head = classifier_module(model)
        opt = create_optimizer(name, [{"params": head.parameters(), "lr": start}], cfg.weight_decay)
        lrs, raw = _sweep((head, opt, create_loss(cfg.loss, cfg.label_smoothing)), (views, rows, images.labels),
                          np.geomspace(start, end, steps), cfg, curve)
    losses = smooth(smooth(raw, curve.beta)[::-1], curve.beta)[::-1]  # forward and back: no lag
    suggested = suggest_lr(lrs, losses)
    _logger.info("lr-find: %d of %d steps, suggested lr %.2e (%s)", len(lrs), steps, suggested, name)
    return LRFindResult(lrs, losses, raw, suggested, name, skipped)


def _check_sweep(start: float, end: float, steps: int, beta: float) -> None:
    if not 0 < start < end:
        raise InputError(f"need 0 < start < end, got start {start:g}, end {end:g}")
    if steps < 5:
        raise InputError(f"steps must be at least 5, got {steps}")
    if not 0 <= beta < 1:
        raise InputError(f"beta must be in [0, 1), got {beta}")


def _sweep(trainee: tuple, data: tuple[ViewStore, np.ndarray, np.ndarray], schedule: np.ndarray,
           cfg: TrainConfig, curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    """Train one minibatch per scheduled LR; return the LRs run and their raw losses. Each loss
    is the minibatch's before its own step, so it reflects the LRs before it (as in fastai).
    trainee: (head, optimizer, loss); data: (views, rows to sample, labels)."""
    (head, opt, loss_fn), (views, rows, labels) = trainee, data
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = _minibatches(rows, cfg.batch_size, gen)
    avg, best, lrs, raw = 0.0, float("inf"), [], []
    head.train()
    for i, lr in enumerate(schedule):
        for group in opt.param_groups:
            group["lr"] = float(lr)
        b = next(batches)
        slots = (torch.rand(len(b), generator=gen).numpy() * views.distinct[b]).astype(np.int64)
        loss = loss_fn(head(views.take(slots, b)), torch.from_numpy(labels[b]))
        if not torch.isfinite(loss):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lrs.append(float(lr))
        raw.append(float(loss.detach()))
        avg = curve.beta * avg + (1 - curve.beta) * raw[-1]
        smoothed = avg / (1 - curve.beta ** (i + 1))
        best = min(best, smoothed)
        if smoothed > curve.diverge * best:
            _logger.debug("lr-find: loss diverged at lr %.2e (step %d)", lr, i)
            break
    return np.array(lrs), np.array(raw)


def _minibatches(rows: np.ndarray, batch_size: int, gen: torch.Generator):
    """Endless shuffled minibatches of `rows`. A ragged last batch is dropped: a batch of a few
    images would put a spike in the curve that the smoothing then carries for several steps."""
    size = min(batch_size, len(rows))
    while True:
        order = rows[torch.randperm(len(rows), generator=gen).numpy()]
        for s in range(0, len(order) - size + 1, size):
            yield order[s:s + size]


def smooth(values: np.ndarray, beta: float) -> np.ndarray:
    """Bias-corrected exponential moving average (the first values are not pulled towards 0)."""
    out, avg = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def suggest_lr(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR where the smoothed loss falls fastest against log(LR).

    Chosen over "the LR of the minimum loss / 10": the minimum sits right before divergence,
    where the smoothing lag and the divergence cut-off move it around, while the steepest
    descent does not need the sweep to diverge at all. The two ends are left out so the
    suggestion always lies strictly inside the sweep.
    """
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    assert lrs.shape == losses.shape, (lrs.shape, losses.shape)
    if len(lrs) < 3:
        raise InputError(f"the loss diverged after {len(lrs)} step(s); lower the sweep's start")
    slope = np.gradient(losses, np.log10(lrs))
    return float(lrs[1 + int(np.argmin(slope[1:-1]))])


def lr_find_png(result: LRFindResult, path: str | Path) -> Path:
    """Write the smoothed (and raw) loss against the LR on a log axis, the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(result.lrs, result.raw_losses, color="0.75", lw=0.8, label="minibatch loss")
    ax.plot(result.lrs, result.losses, color="C0", lw=1.8, label="smoothed loss")
    at = int(np.argmin(np.abs(result.lrs - result.suggested)))
    ax.axvline(result.suggested, color="C3", ls="--", lw=1)
    ax.plot([result.suggested], [result.losses[at]], "o", color="C3",
            label=f"suggested lr {result.suggested:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate ({result.optimizer})")
    ax.set_ylabel("training loss")
    # the diverged tail would squash the interesting part of the curve
    low = min(float(result.raw_losses.min()), float(result.losses.min()))
    high = min(float(result.raw_losses.max()), 1.5 * float(result.losses[0]))
    ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.set_title("Learning-rate range test")
    ax.legend(loc="best", fontsize=8)
    return write_figure(path, fig)
