"""Training and cached prediction end to end: the pieces a command or a loop calls.

`train_localizer` builds the model, caches trunk maps of augmented views of the training images
and of the plain view of the validation images, and runs `fit`. `predict_views` runs a trained
model on cached views of any images (EVAL and FLIP for test-time augmentation) and returns
per-view class probabilities and boxes in original pixels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from classification.cache import FeatureCache
from classification.data import ImageSet, stratified_split
from classification.transforms import DataConfig, data_config
from localization.config import LocalizeConfig
from localization.data import BoxSet
from localization.features import EVAL, Extraction, ViewMaps, extract_maps
from localization.heads import class_probs, run_heads, to_pixels
from localization.model import Localizer, create_localizer, split
from localization.train import FitResult, Material, cut_for, fit
from localization.views import ViewMaker

_logger = logging.getLogger(__name__)


@dataclass
class Trained:
    """A fitted localizer and what it was fitted with."""
    model: Localizer
    classes: list[str]
    data_cfg: DataConfig
    cfg: LocalizeConfig
    result: FitResult
    n_train: int = 0
    n_val: int = 0


@dataclass
class ViewPredictions:
    """probs: (V, N, K); boxes: (V, N, 4) original pixels; ok: (N,) decodable."""
    probs: np.ndarray
    boxes: np.ndarray
    ok: np.ndarray
    skipped: list[tuple[str, str]]


def build_model(cfg: LocalizeConfig, n_classes: int, weights: str | None = None) -> tuple[Localizer, DataConfig]:
    """The model of `cfg` (backbone weights as configured, unless `weights` is given) and its input config."""
    torch.manual_seed(cfg.training.seed)  # the heads' initialisation
    m = cfg.model
    model = create_localizer(m.name, n_classes, m.img_size, weights=m.weights if weights is None else weights,
                             box_head=m.box_head, hidden=m.hidden, dropout=m.dropout)
    return model, data_config(model.backbone, size=m.img_size)


def extraction(cfg: LocalizeConfig, progress: bool = False) -> Extraction:
    t = cfg.training
    return Extraction(cut=cut_for(cfg), runtime=t.runtime, batch_size=t.batch_size, workers=t.workers,
                      progress=progress)


def training_views(cfg: LocalizeConfig) -> list[int]:
    """Augmented view ids of a training image (the plain view alone without augmentation)."""
    a = cfg.augmentation
    return list(range(a.views)) if a.views and a.name != "none" else [EVAL]


def material(model: Localizer, cfg: LocalizeConfig, data_cfg: DataConfig, data: BoxSet, views: list[int],
             cache: FeatureCache, progress: bool = False, weights: np.ndarray | None = None) -> Material:
    name = cfg.augmentation.name if any(v >= 0 for v in views) else "none"
    maker = ViewMaker(data_cfg, cfg.augmentation.resize, name)
    maps = extract_maps(model, data.images, maker, views, cache, extraction(cfg, progress))
    return Material(maps, data.images.labels, data.boxes, weights)


def split_validation(data: BoxSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): validation from images with a box, per class."""
    boxed = np.flatnonzero(data.has_box)
    if fraction <= 0 or len(boxed) < 4:
        return np.arange(len(data)), np.zeros(0, np.int64)
    _, val = stratified_split(data.images.labels[boxed], fraction, seed)
    val = boxed[val]
    return np.setdiff1d(np.arange(len(data)), val), val


def train_localizer(data: BoxSet, cfg: LocalizeConfig, cache: FeatureCache, progress: bool = False,
                    sample_weight: np.ndarray | None = None, val: BoxSet | None = None) -> Trained:
    """Fit a localizer on `data` (validation split from it unless `val` is given)."""
    if val is None:
        tr, va = split_validation(data, cfg.training.val_fraction, cfg.training.seed)
        train_set, val = data.subset(tr), data.subset(va)
        sample_weight = None if sample_weight is None else sample_weight[tr]
    else:
        train_set = data
    model, data_cfg = build_model(cfg, len(data.images.classes))
    train = material(model, cfg, data_cfg, train_set, training_views(cfg), cache, progress, sample_weight)
    held = material(model, cfg, data_cfg, val, [EVAL], cache, progress) if len(val) else None
    # again: computing maps that were not cached yet draws on torch's generator (DataLoader seeds),
    # and a fit must not depend on what the cache held (a resumed loop reruns a trial with it warm)
    torch.manual_seed(cfg.training.seed)
    result = fit(model, cfg, train, held)
    return Trained(model, list(data.images.classes), data_cfg, cfg, result, len(train_set), len(val))


def predict_views(trained: Trained, images: ImageSet, cache: FeatureCache, views: list[int] = (EVAL,),
                  progress: bool = False) -> ViewPredictions:
    """Class probabilities and original-pixel boxes for `views` of every image, from cached maps
    (the trunk is frozen, so the maps of a pool are computed once for every round of a loop)."""
    cfg = trained.cfg
    maker = ViewMaker(trained.data_cfg, cfg.augmentation.resize, "none")
    maps = extract_maps(trained.model, images, maker, list(views), cache, extraction(cfg, progress))
    return heads_on_views(trained, maps)


def heads_on_views(trained: Trained, maps: ViewMaps) -> ViewPredictions:
    cfg, tail = trained.cfg, split(trained.model, cut_for(trained.cfg))[1]
    n_views, n = maps.maps.shape[:2]
    probs = np.zeros((n_views, n, len(trained.classes)))
    boxes = np.full((n_views, n, 4), np.nan)
    for v in range(n_views):
        logits, norm = run_heads(trained.model, tail, maps.maps[v][maps.ok], maps.shape)
        probs[v][maps.ok] = class_probs(logits, cfg.criterion.class_loss)
        boxes[v][maps.ok] = to_pixels(norm, maps.geos[v][maps.ok], cfg.model.img_size)
    return ViewPredictions(probs, boxes, maps.ok, maps.skipped)
