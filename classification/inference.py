"""`extract_features()` and `predict()`: batched, parallel decoding, fast runtime, feature cache.

Features depend only on (image content, backbone, transform, view), so they are computed once and
read from the cache afterwards; the head is applied in PyTorch on top, which costs nothing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from classification import distributed
from classification.cache import FeatureCache, namespace
from classification.data import ImageSet
from classification.datasets import ImageDataset, make_loader, view_seed
from classification.models import backbone_id, classifier_module, split_model
from classification.runtime import make_runner
from classification.transforms import DataConfig, create_transform, transform_id

_logger = logging.getLogger(__name__)

FLUSH_ROWS = 1024  # write cache shards this often, so an interrupted run keeps most of its work


@dataclass
class Features:
    """feats: (V, N, D) float32; ok: (N,) False for images that could not be decoded."""
    feats: np.ndarray
    ok: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Prediction:
    """probs: (N, C), mean over views; ok: (N,) decodable."""
    probs: np.ndarray
    ok: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


def extract_features(model: nn.Module, images: ImageSet, data_cfg: DataConfig, cache: FeatureCache,
                     kind: str = "eval", n_views: int = 1, runtime: str = "auto", device: str = "cpu",
                     batch_size: int = 64, workers: int | None = None, n_ops: int = 2,
                     progress: bool = False, tail_blocks: int = 0) -> Features:
    """Backbone features of every image for `n_views` views of transform `kind`.

    View v of image h is augmented with a seed derived from (h, v), so a cached view is the
    same view whenever it is asked for again. With `tail_blocks`, the "features" are the
    flattened float16 feature maps entering the last `tail_blocks` blocks.
    """
    n_views = 1 if kind == "eval" else n_views
    transform = create_transform(kind, data_cfg, n_ops=n_ops)
    arch = model.pretrained_cfg.get("architecture", type(model).__name__)
    cut = {"cut": tail_blocks} if tail_blocks else {}
    spaces = [namespace(model=arch, weights=backbone_id(model, tail_blocks), transform=transform_id(transform),
                        kind=kind, view=v, size=data_cfg.size, **cut) for v in range(n_views)]
    feats, hit = None, np.ones(len(images), bool)
    for v, ns in enumerate(spaces):
        got, h = cache.get(ns, images.hashes)
        if got is not None and feats is None:
            feats = np.zeros((n_views, len(images), got.shape[1]), got.dtype)
        if got is not None:
            feats[v][h] = got[h]
        hit &= h
    todo = distributed.broadcast(np.flatnonzero(~hit))  # rank 0's cache decides what is computed
    ok = np.ones(len(images), bool)
    skipped: list[tuple[str, str]] = []
    mine, main = distributed.shard(todo), distributed.is_main()
    if len(todo):
        feats = _compute(model, images, mine, transform, kind, n_views, data_cfg,
                         cache if main else FeatureCache(None), spaces, feats if main else None,
                         ok, skipped, runtime, device, batch_size, workers, progress, tail_blocks)
    if distributed.active():
        return _gather_rows(feats, ok, skipped, mine, images, cache, spaces, n_views)
    return Features(feats, ok, skipped)


def _gather_rows(feats, ok, skipped, mine, images, cache, spaces, n_views) -> Features:
    """Under torchrun: rank 0 collects every rank's computed rows and skips, and caches them.
    Every rank returns rank 0's ok mask, skips and feature shape, so all ranks take the same
    branches afterwards; the features themselves are only rank 0's to use."""
    has = feats is not None and feats.shape[-1] > 0
    parts = distributed.gather((mine, feats[:, mine] if has else None, ok[mine], skipped[:]))
    for rows, got, good, their_skips in (parts or [None])[1:]:
        ok[rows] = good
        skipped += their_skips
        if got is None:
            continue
        if feats is None or not feats.shape[-1]:
            feats = np.zeros((n_views, len(images), got.shape[-1]), got.dtype)
        feats[:, rows] = got
        keys = [images.hashes[i] for i in rows[good]]
        for v, ns in enumerate(spaces):
            cache.put(ns, keys, got[v, good])
    main = parts is not None
    shape = (feats.shape[-1], feats.dtype.str) if main and feats is not None else (0, "<f4")
    ok, skipped, (dim, dtype) = distributed.broadcast((ok, skipped, shape) if main else None)
    if not main or feats is None:
        feats = np.zeros((n_views, len(images), dim), np.dtype(dtype))  # untouched pages: no memory
    return Features(feats, ok, skipped)


def _compute(model, images, todo, transform, kind, n_views, data_cfg, cache, spaces, feats, ok,
             skipped, runtime, device, batch_size, workers, progress, tail_blocks):
    run = make_runner(model, data_cfg.size, runtime, device, cache.root, tail_blocks)
    dtype = np.float16 if tail_blocks else np.float32
    seeds = None if kind == "eval" else [[view_seed(images.hashes[i], v) for v in range(n_views)]
                                         for i in todo]
    dataset = ImageDataset([images.paths[i] for i in todo], transform, seeds,
                           draft_size=data_cfg.size)
    loader = make_loader(dataset, batch_size, workers)
    pending_idx: list[np.ndarray] = []
    for idx, x, bad in _progress(loader, progress, f"features ({kind})"):
        for j, why in bad:
            ok[todo[j]] = False
            skipped.append((images.paths[todo[j]], why))
            _logger.warning("skipped %s: %s", images.paths[todo[j]], why)
        if x is None:
            continue
        b, v = x.shape[:2]
        out = run(x.reshape(b * v, *x.shape[2:])).reshape(b, v, -1)
        if feats is None:
            feats = np.zeros((n_views, len(images), out.shape[-1]), dtype)
        rows = todo[idx.numpy()]
        feats[:, rows] = out.transpose(1, 0, 2)
        pending_idx.append(rows)
        if sum(map(len, pending_idx)) >= FLUSH_ROWS:
            _flush(cache, spaces, images, feats, pending_idx)
    _flush(cache, spaces, images, feats, pending_idx)
    if feats is None:  # every image failed to decode
        feats = np.zeros((n_views, len(images), 0), np.float32)
    return feats


def _flush(cache, spaces, images, feats, pending_idx) -> None:
    if not pending_idx:
        return
    rows = np.concatenate(pending_idx)
    keys = [images.hashes[i] for i in rows]
    for v, ns in enumerate(spaces):
        cache.put(ns, keys, feats[v, rows])
    pending_idx.clear()


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


@torch.inference_mode()
def map_shape(model: nn.Module, size: int, tail_blocks: int) -> tuple[int, int, int]:
    """(C, H, W) of the feature map entering the last `tail_blocks` blocks at input `size`."""
    trunk = split_model(model, tail_blocks)[0].eval()
    return tuple(trunk(torch.zeros(1, 3, size, size)).shape[1:])


def predict(model: nn.Module, images: ImageSet, data_cfg: DataConfig, cache: FeatureCache,
            kind: str = "eval", n_views: int = 1, **kwargs) -> Prediction:
    """Class probabilities for every image: the mean over `n_views` views of transform `kind`.
    The pool is taken a chunk at a time (`ImageSet.chunks`), so only one chunk's features are in memory."""
    tail = kwargs.get("tail_blocks", 0)
    probs, ok, skipped = None, np.ones(len(images), bool), []
    for rows, chunk in images.chunks():
        f = extract_features(model, chunk, data_cfg, cache, kind=kind, n_views=n_views, **kwargs)
        ok[rows], skipped = f.ok, skipped + f.skipped
        if not f.feats.shape[-1]:
            continue
        p = head_probs(model, f.feats, tail_blocks=tail, size=data_cfg.size).mean(axis=0)
        if probs is None:
            probs = np.zeros((len(images), p.shape[1]), np.float32)
        probs[rows] = p
    return Prediction(probs if probs is not None else np.zeros((len(images), 0), np.float32), ok, skipped)


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="batch", leave=False)
