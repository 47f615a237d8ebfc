"""`fit()`: train a classifier in `head` mode (frozen backbone, cached features; the CPU default)
or `finetune` mode (staged unfreezing; the CUDA default).

Both modes share the epoch loop in `trainer.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from classification.cache import FeatureCache
from classification.config import TrainConfig, resolve_device
from classification.data import ImageSet
from classification.errors import InputError
from classification.models import create_classifier
from classification.trainer import EpochCallback, seed_everything
from classification.transforms import DataConfig, data_config


@dataclass
class FitResult:
    """model: the best weights; history: one dict per epoch; best: that epoch's record."""
    model: nn.Module
    data_cfg: DataConfig
    mode: str
    history: list[dict]
    best: dict
    skipped: list[tuple[str, str]] = field(default_factory=list)


def fit(cfg: TrainConfig, train: ImageSet, val: ImageSet, cache: FeatureCache, *,
        strong: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
        progress: bool = False, on_epoch: EpochCallback | None = None) -> FitResult:
    """Train on `train`, select on `val` (may be empty: then the last epoch is kept).

    Args:
        strong: bool (N,), samples to train under the strong transform (pseudo-labels); the
            others get the weak transform.
        sample_weight: float (N,), per-sample loss weight (for example pseudo-label confidence).
    """
    if len(train) == 0:
        raise InputError("no training images")
    n = len(train)
    strong = np.zeros(n, bool) if strong is None else np.asarray(strong, bool)
    sample_weight = np.ones(n, np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
    assert strong.shape == (n,) and sample_weight.shape == (n,)
    device = resolve_device(cfg.device)
    mode = cfg.resolved_mode(device)
    seed_everything(cfg.seed)
    model = create_classifier(cfg.model, len(train.classes), cfg.weights, cfg.head, cfg.hidden)
    data_cfg = data_config(model, cfg.img_size)
    if mode == "head":
        from classification.head import fit_head as run
    else:
        from classification.finetune import fit_finetune as run
    history, best, skipped = run(model, cfg, data_cfg, train, val, cache, strong, sample_weight,
                                 device, progress, on_epoch)
    return FitResult(model.cpu().eval(), data_cfg, mode, history, best, skipped)
