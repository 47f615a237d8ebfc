"""`fit()`: train a classifier in one of the modes of `train.modes.MODES`: `head` (frozen
backbone, cached features; the CPU default) or `finetune` (staged unfreezing; the CUDA default).

The modes share the epoch loop in `train/stage.py`. A `FitResult` predicts with its own settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from torch import nn

from classification.cache import FeatureCache
from classification.config import TrainConfig, resolve_device
from classification.context import EpochCallback, FitContext
from classification.data import UNLABELED, ImageSet
from classification.errors import InputError
from classification.inference import Prediction, predict_with
from classification.models import create_classifier
from classification.registry import lookup
from classification.train.modes import MODES
from classification.train.rotation import attach_rotation_head
from classification.train.stage import seed_everything
from classification.transforms import DataConfig, choose_size, data_config


@dataclass
class FitResult:
    """model: the best weights; history: one dict per epoch; best: that epoch's record; cfg: the
    settings it was trained with (prediction uses its runtime, batch size, workers, tail blocks)."""
    model: nn.Module
    data_cfg: DataConfig
    mode: str
    history: list[dict]
    best: dict
    cfg: TrainConfig
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def predict_probs(self, images: ImageSet, cache: FeatureCache, kind: str = "eval", n_views: int = 1,
                      progress: bool = False) -> Prediction:
        """Class probabilities of `images` (mean over `n_views` views of `kind`), on the CPU."""
        ctx = FitContext(self.model, self.cfg, self.data_cfg, cache, "cpu", progress)
        return predict_with(ctx, images, kind, n_views)

    def predict(self, images: ImageSet, cache: FeatureCache, progress: bool = False) -> np.ndarray:
        """The predicted class of each image (eval view), -1 where it could not be decoded."""
        pred = self.predict_probs(images, cache, progress=progress)
        if pred.probs.shape[1] == 0:  # nothing could be decoded
            return np.full(len(images), UNLABELED, np.int64)
        return np.where(pred.ok, pred.probs.argmax(1), UNLABELED)


def sized(cfg: TrainConfig, paths: list[str]) -> TrainConfig:
    """`cfg` with its input size chosen from the model and the images at `paths` when unset
    (`transforms.auto_size`); an explicit `img_size` is kept."""
    return cfg if cfg.img_size is not None else replace(cfg, img_size=choose_size(cfg.model, paths))


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
    cfg = sized(cfg, train.paths)
    n = len(train)
    strong = np.zeros(n, bool) if strong is None else np.asarray(strong, bool)
    sample_weight = np.ones(n, np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)
    assert strong.shape == (n,) and sample_weight.shape == (n,)
    device = resolve_device(cfg.device)
    mode = cfg.resolved_mode(device)
    run = lookup("mode", MODES, mode)
    # FeatureNorm's centre is fitted on cached features; finetune mode keeps timm's plain head
    cfg = replace(cfg, feature_norm=cfg.feature_norm and mode == "head")
    seed_everything(cfg.seed)
    model = create_classifier(cfg.model, len(train.classes), cfg.weights, cfg.head, cfg.hidden,
                              norm=cfg.feature_norm)
    if cfg.aux_rotation:
        attach_rotation_head(model)
    ctx = FitContext(model, cfg, data_config(model, cfg.img_size), cache, device, progress, on_epoch)
    history, best, skipped = run(ctx, train, val, strong, sample_weight)
    return FitResult(model.cpu().eval(), ctx.data_cfg, mode, history, best, cfg, skipped)
