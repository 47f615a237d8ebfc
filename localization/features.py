"""Trunk maps of every (image, view), computed once and cached on disk.

The trunk (the backbone before its last `cut` blocks) stays frozen, so its output for a view of
an image depends only on the image content, the trunk's weights and the view. Each view is
cached with its geometry row, which is all a box needs to become a training target: pseudo-boxes
that change from one round to the next reuse the same cached views.

View ids: `EVAL` (the plain letterboxed image), `FLIP` (its mirror), or v >= 0, the v-th
augmented view, whose seed is derived from the image's content hash.
"""
from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from classification.cache import FeatureCache, namespace
from classification.data import ImageSet
from classification.models import state_digest
from classification.runtime import cache_root_or_user, onnx_file_runner, resolve_runtime, torch_runner
from classification.transforms import transform_id
from localization.model import Localizer, split
from localization.views import EVAL, ViewDataset, ViewMaker, view_loader

_logger = logging.getLogger(__name__)


@dataclass
class ViewMaps:
    """maps: (V, N, D) float16 flattened trunk maps of shape `shape`; geos: (V, N, 6); ok: (N,)."""
    maps: np.ndarray
    geos: np.ndarray
    ok: np.ndarray
    shape: tuple[int, int, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Extraction:
    """How to compute trunk maps."""
    cut: int                      # blocks after the trunk (0: the trunk is the whole backbone)
    runtime: str = "auto"         # auto (ONNX Runtime on CPU) | onnx | torch
    batch_size: int = 32
    workers: int | None = None    # decoding processes; None: cores - 1
    progress: bool = False


def view_seed(digest: str, view: int) -> int:
    """The augmentation seed of view `view` of the image with content hash `digest`."""
    return zlib.crc32(f"{digest}:{view}".encode()) & 0x7FFFFFFF


def extract_maps(model: Localizer, images: ImageSet, maker: ViewMaker, views: list[int],
                 cache: FeatureCache, how: Extraction) -> ViewMaps:
    """Trunk maps and geometry rows of `views` of every image, from the cache where present."""
    trunk = split(model, how.cut)[0].eval()
    with torch.no_grad():
        shape = tuple(trunk(torch.zeros(1, 3, maker.cfg.size, maker.cfg.size)).shape[1:])
    spaces = [_namespace(model, trunk, maker, how.cut, v) for v in views]
    dim = int(np.prod(shape))
    maps = np.zeros((len(views), len(images), dim), np.float16)
    geos = np.zeros((len(views), len(images), 6), np.float64)
    hit = np.ones(len(images), bool)
    for v, ns in enumerate(spaces):
        got, h = cache.get(ns, images.hashes)
        rows, hg = cache.get(ns + "-geo", images.hashes)
        h &= hg
        if h.any():
            maps[v][h], geos[v][h] = got[h], rows[h]
        hit &= h
    ok, skipped = np.ones(len(images), bool), []
    todo = np.flatnonzero(~hit)
    if len(todo):
        run = _runner(trunk, maker.cfg.size, how.runtime, cache.root, model, how.cut)
        _compute(run, images, todo, maker, views, (maps, geos, ok, skipped), how)
        done = todo[ok[todo]]
        keys = [images.hashes[i] for i in done]
        for v, ns in enumerate(spaces):
            cache.put(ns, keys, maps[v, done])
            cache.put(ns + "-geo", keys, geos[v, done].astype(np.float32))
    return ViewMaps(maps, geos, ok, shape, skipped)


def _compute(run, images, todo, maker, views, out, how: Extraction) -> None:
    maps, geos, ok, skipped = out
    specs = [[view_seed(images.hashes[i], v) if v >= 0 else v for v in views] for i in todo]
    dataset = ViewDataset([images.paths[i] for i in todo], maker, specs)
    workers = max(0, min(8, (os.cpu_count() or 1) - 1)) if how.workers is None else how.workers
    # a batch holds batch_size image views, not images: a big input size times many views would
    # otherwise hold gigabytes of activations at once
    loader = view_loader(dataset, max(1, how.batch_size // len(views)), workers)
    for idx, x, geo, bad in progress_bar(loader, how.progress, "trunk maps"):
        for j, why in bad:
            ok[todo[j]] = False
            skipped.append((images.paths[todo[j]], why))
            _logger.warning("skipped %s: %s", images.paths[todo[j]], why)
        if x is None:
            continue
        b, v = x.shape[:2]
        rows = todo[idx]
        maps[:, rows] = run(x.reshape(b * v, *x.shape[2:])).reshape(b, v, -1).transpose(1, 0, 2)
        geos[:, rows] = geo.transpose(1, 0, 2)


def _runner(trunk, size: int, runtime: str, cache_root: Path | None, model: Localizer, cut: int):
    if resolve_runtime(runtime, "cpu") == "torch":
        return torch_runner(trunk, "cpu")
    root = cache_root_or_user(cache_root)
    arch = model.backbone.pretrained_cfg.get("architecture", type(model.backbone).__name__)
    path = root / "onnx" / f"{arch}-{state_digest(trunk.state_dict())}-{size}-maps{cut}.onnx"
    return onnx_file_runner(trunk, size, path)


def _namespace(model: Localizer, trunk, maker: ViewMaker, cut: int, view: int) -> str:
    arch = model.backbone.pretrained_cfg.get("architecture", type(model.backbone).__name__)
    aug = transform_id(maker.transform) if view >= 0 else "none"
    return namespace(kind="localize-maps", model=arch, weights=state_digest(trunk.state_dict()), cut=cut,
                     data=maker.cfg.__dict__, resize=maker.resize, augmentation=aug, view=view)


def progress_bar(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="batch", leave=False)


