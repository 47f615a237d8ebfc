"""`predict()`: class probabilities of images, the mean over views, on top of cached features.

The backbone's features come from `features.extract_features` (fast runtime, feature cache); the
head, and with `tail_blocks` the tail blocks, are applied in PyTorch on top, which costs little.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.context import FitContext
from classification.data import ImageSet
from classification.features import extract_features
from classification.models import classifier_module, map_shape, split_model
from classification.transforms import DataConfig


@dataclass
class Prediction:
    """probs: (N, C), mean over views; ok: (N,) decodable."""
    probs: np.ndarray
    ok: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


def predict(model: nn.Module, images: ImageSet, data_cfg: DataConfig, cache: FeatureCache,
            kind: str = "eval", n_views: int = 1, **options) -> Prediction:
    """Class probabilities for every image: the mean over `n_views` views of transform `kind`.

    `options`: `device` (default cpu), `progress`, and the `TrainConfig` settings the pass uses
    (`runtime`, `batch_size`, `workers`, `tail_blocks`).
    """
    device, progress = options.pop("device", "cpu"), options.pop("progress", False)
    ctx = FitContext(model, TrainConfig(**options), data_cfg, cache, device, progress)
    return predict_with(ctx, images, kind, n_views)


def predict_with(ctx: FitContext, images: ImageSet, kind: str = "eval", n_views: int = 1) -> Prediction:
    """`predict()` with a context. The pool is taken a chunk at a time (`ImageSet.chunks`), so only
    one chunk's features are in memory."""
    probs, ok, skipped = None, np.ones(len(images), bool), []
    for rows, chunk in images.chunks():
        f = extract_features(ctx, chunk, kind=kind, n_views=n_views)
        ok[rows], skipped = f.ok, skipped + f.skipped
        if not f.feats.shape[-1]:
            continue
        p = head_probs(ctx.model, f.feats, tail_blocks=ctx.cfg.tail_blocks, size=ctx.data_cfg.size).mean(axis=0)
        if probs is None:
            probs = np.zeros((len(images), p.shape[1]), np.float32)
        probs[rows] = p
    return Prediction(probs if probs is not None else np.zeros((len(images), 0), np.float32), ok, skipped)


@torch.inference_mode()
def head_probs(model: nn.Module, feats: np.ndarray, batch_size: int = 1024, tail_blocks: int = 0,
               size: int | None = None) -> np.ndarray:
    """Softmax of the trainable part applied to cached features (..., D) -> (..., C): the head on
    pooled features, or with `tail_blocks` the tail and head on flattened maps (give `size`)."""
    model.eval().cpu()
    head = classifier_module(model)
    tail = split_model(model, tail_blocks)[1] if tail_blocks else None
    shape = map_shape(model, size, tail_blocks) if tail_blocks else None
    flat = feats.reshape(-1, feats.shape[-1])
    out = []
    for i in range(0, len(flat), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(flat[i:i + batch_size], np.float32))
        if tail is not None:
            x = tail(x.reshape(-1, *shape))
        out.append(torch.softmax(head(x).float(), dim=1))
    probs = torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
    return probs.reshape(*feats.shape[:-1], -1)
