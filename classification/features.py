"""`extract_features()`: backbone features of images, batched, decoded in parallel, run through the
fast runtime and kept in the feature cache.

Features depend only on (image content, backbone, transform, view), so they are computed once and
read from the cache afterwards. Under torchrun the images the cache lacks are split by rank
(`_extract_across_ranks`, the one place here that knows of ranks).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from classification import distributed
from classification.cache import FeatureCache, namespace
from classification.context import FitContext
from classification.data import ImageSet
from classification.datasets import ImageDataset, make_loader, view_seed
from classification.models import backbone_id
from classification.progress import track
from classification.runtime import make_runner
from classification.transforms import create_transform, transform_id

_logger = logging.getLogger(__name__)

FLUSH_ROWS = 1024  # write cache shards this often, so an interrupted run keeps most of its work


@dataclass
class Features:
    """feats: (V, N, D) float32; ok: (N,) False for images that could not be decoded."""
    feats: np.ndarray
    ok: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Pass:
    """One extraction over N images: its transform and cache namespaces, and what it has so far."""
    kind: str
    transform: object
    spaces: list[str]                    # cache namespace of each view
    feats: np.ndarray | None = None      # (V, N, D), allocated once the width is known
    ok: np.ndarray | None = None         # (N,)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_views(self) -> int:
        return len(self.spaces)

    def allocate(self, n: int, dim: int, dtype) -> None:
        if self.feats is None:
            self.feats = np.zeros((self.n_views, n, dim), dtype)


def extract_features(ctx: FitContext, images: ImageSet, kind: str = "eval", n_views: int = 1) -> Features:
    """Backbone features of every image for `n_views` views of transform `kind`.

    View v of image h is augmented with a seed derived from (h, v), so a cached view is the
    same view whenever it is asked for again. With `ctx.cfg.tail_blocks`, the "features" are the
    flattened float16 feature maps entering the last `tail_blocks` blocks.
    """
    job = _start(ctx, len(images), kind, 1 if kind == "eval" else n_views)
    hit = _from_cache(ctx.cache, images, job)
    if distributed.active():
        return _extract_across_ranks(ctx, images, job, hit)
    todo = np.flatnonzero(~hit)
    if len(todo):
        _compute(ctx, images, todo, job, ctx.cache)
    return Features(job.feats, job.ok, job.skipped)


def _start(ctx: FitContext, n: int, kind: str, n_views: int) -> _Pass:
    transform = create_transform(kind, ctx.data_cfg, n_ops=ctx.cfg.n_ops)
    model, tail = ctx.model, ctx.cfg.tail_blocks
    arch = model.pretrained_cfg.get("architecture", type(model).__name__)
    cut = {"cut": tail} if tail else {}
    weights, tid = backbone_id(model, tail), transform_id(transform)
    spaces = [namespace(model=arch, weights=weights, transform=tid, kind=kind, view=v, size=ctx.data_cfg.size,
                        **cut) for v in range(n_views)]
    return _Pass(kind, transform, spaces, ok=np.ones(n, bool))


def _from_cache(cache: FeatureCache, images: ImageSet, job: _Pass) -> np.ndarray:
    """Fill `job.feats` with the cached views; the mask of images whose every view was cached."""
    hit = np.ones(len(images), bool)
    for v, ns in enumerate(job.spaces):
        got, h = cache.get(ns, images.hashes)
        if got is not None:
            job.allocate(len(images), got.shape[1], got.dtype)
            job.feats[v][h] = got[h]
        hit &= h
    return hit


def _compute(ctx: FitContext, images: ImageSet, rows: np.ndarray, job: _Pass, cache: FeatureCache) -> None:
    """Run the backbone over images[rows] into `job`, writing them to `cache` every FLUSH_ROWS."""
    cfg = ctx.cfg
    run = make_runner(ctx.model, ctx.data_cfg.size, cfg.runtime, ctx.device, cache.root, cfg.tail_blocks)
    seeds = None if job.kind == "eval" else [[view_seed(images.hashes[i], v) for v in range(job.n_views)]
                                             for i in rows]
    dataset = ImageDataset([images.paths[i] for i in rows], job.transform, seeds, draft_size=ctx.data_cfg.size)
    batches = track(make_loader(dataset, cfg.batch_size, cfg.workers), ctx.progress, f"features ({job.kind})", "batch")
    pending: list[np.ndarray] = []
    for idx, x, bad in batches:
        _skip(images, rows, bad, job)
        if x is None:
            continue
        b, v = x.shape[:2]
        out = run(x.reshape(b * v, *x.shape[2:])).reshape(b, v, -1)
        job.allocate(len(images), out.shape[-1], np.float16 if cfg.tail_blocks else np.float32)
        done = rows[idx.numpy()]
        job.feats[:, done] = out.transpose(1, 0, 2)
        pending.append(done)
        if sum(map(len, pending)) >= FLUSH_ROWS:
            _flush(cache, images, job, pending)
    _flush(cache, images, job, pending)
    job.allocate(len(images), 0, np.float32)  # every image failed to decode


def _skip(images: ImageSet, rows: np.ndarray, bad: list[tuple[int, str]], job: _Pass) -> None:
    for j, why in bad:
        job.ok[rows[j]] = False
        job.skipped.append((images.paths[rows[j]], why))
        _logger.warning("skipped %s: %s", images.paths[rows[j]], why)


def _flush(cache: FeatureCache, images: ImageSet, job: _Pass, pending: list[np.ndarray]) -> None:
    if not pending:
        return
    rows = np.concatenate(pending)
    keys = [images.hashes[i] for i in rows]
    for v, ns in enumerate(job.spaces):
        cache.put(ns, keys, job.feats[v, rows])
    pending.clear()


def _extract_across_ranks(ctx: FitContext, images: ImageSet, job: _Pass, hit: np.ndarray) -> Features:
    """Under torchrun: rank 0's cache decides what is computed, each rank computes every
    world_size()-th of those images, and rank 0 collects every rank's rows and skips and caches
    them. Every rank returns rank 0's ok mask, skips and feature shape, so all ranks take the same
    branches afterwards; the features themselves are only rank 0's to use."""
    todo = distributed.broadcast(np.flatnonzero(~hit))
    mine, main = distributed.shard(todo), distributed.is_main()
    if len(todo):
        if not main:
            job.feats = None  # only rank 0's cache counts, and rank 0 alone writes to it
        _compute(ctx, images, mine, job, ctx.cache if main else FeatureCache(None))
    feats, ok, skipped = job.feats, job.ok, job.skipped
    has = feats is not None and feats.shape[-1] > 0
    parts = distributed.gather((mine, feats[:, mine] if has else None, ok[mine], skipped[:]))
    for rows, got, good, their_skips in (parts or [None])[1:]:
        ok[rows] = good
        skipped += their_skips
        if got is None:
            continue
        if feats is None or not feats.shape[-1]:
            feats = np.zeros((job.n_views, len(images), got.shape[-1]), got.dtype)
        feats[:, rows] = got
        keys = [images.hashes[i] for i in rows[good]]
        for v, ns in enumerate(job.spaces):
            ctx.cache.put(ns, keys, got[v, good])
    shape = (feats.shape[-1], feats.dtype.str) if main and feats is not None else (0, "<f4")
    ok, skipped, (dim, dtype) = distributed.broadcast((ok, skipped, shape) if main else None)
    if not main or feats is None:
        feats = np.zeros((job.n_views, len(images), dim), np.dtype(dtype))  # untouched pages: no memory
    return Features(feats, ok, skipped)
