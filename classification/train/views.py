"""Head mode's training views: `training_views()` extracts them, a `ViewStore` holds them,
(N, 1 + V, D) float16 in an unnamed temporary file.

A fit over a large pool would otherwise hold every view of every image in memory (1 + V vectors of
D floats per image). The store is written one block of images at a time and read back one block
at a time (full-batch L-BFGS) or a row at a time (minibatches), with plain file reads, so a fit
holds one block in memory whatever the pool's size. The file has no name and disappears with the
process, however it ends.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from classification.context import FitContext
from classification.data import ImageSet
from classification.features import extract_features

BLOCK_BYTES = 64 << 20  # a read block: bounds the features held in memory at once


class ViewStore:
    """Views of N images: `distinct[r]` of image r's 1 + V slots are different views (the rest
    repeat its eval view)."""

    def __init__(self, n: int, n_slots: int, dim: int, dtype=np.float16, folder: str | Path | None = None):
        self.n, self.n_slots, self.dim, self.dtype = n, n_slots, dim, np.dtype(dtype)
        self.distinct = np.ones(n, np.int64)
        self._row_bytes = n_slots * dim * self.dtype.itemsize
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=folder)
        self._file.truncate(n * self._row_bytes)
        self.block_rows = max(1, BLOCK_BYTES // max(self._row_bytes, 1))

    @classmethod
    def from_array(cls, x: np.ndarray, distinct: np.ndarray | None = None, **kwargs) -> "ViewStore":
        """A store of the views x (1 + V, N, D)."""
        store = cls(x.shape[1], x.shape[0], x.shape[2], **kwargs)
        store.write(0, x.transpose(1, 0, 2))
        if distinct is not None:
            store.distinct[:] = distinct
        return store

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ViewStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, start: int, block: np.ndarray) -> None:
        """Rows start.. of the store: block (rows, 1 + V, D)."""
        assert block.shape[1:] == (self.n_slots, self.dim), (block.shape, self.n_slots, self.dim)
        data = np.ascontiguousarray(block, self.dtype).tobytes()
        written = os.pwrite(self._file.fileno(), data, start * self._row_bytes)
        assert written == len(data), (written, len(data))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop as (rows, 1 + V, D)."""
        out = np.empty((stop - start, self.n_slots, self.dim), self.dtype)
        got = os.preadv(self._file.fileno(), [memoryview(out).cast("B")], start * self._row_bytes)
        assert got == out.nbytes, (got, out.nbytes)
        return out

    def take(self, slots: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        """View slots[i] of image rows[i], as float32 (len(rows), D)."""
        width = self.dim * self.dtype.itemsize
        fd = self._file.fileno()
        data = b"".join(os.pread(fd, width, int(r) * self._row_bytes + int(s) * width)
                        for s, r in zip(slots, rows))
        return torch.from_numpy(np.frombuffer(data, self.dtype).astype(np.float32).reshape(len(rows), self.dim))

    def blocks(self, weights: np.ndarray):
        """The store one block at a time, as float32 (rows * (1 + V), D) with each row's weight
        (`weights` (N, 1 + V)), skipping blocks whose weights are all zero. Whole blocks are
        converted as they are: a slot that must not count has weight 0, which costs less than
        gathering the others."""
        for start in range(0, self.n, self.block_rows):
            stop = min(start + self.block_rows, self.n)
            w = weights[start:stop].reshape(-1)
            if not w.any():
                continue
            feats = torch.from_numpy(self.read(start, stop).reshape(-1, self.dim)).float()
            yield feats, start, stop, torch.from_numpy(np.ascontiguousarray(w, np.float32))

    def view_weights(self, rows: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """(N, 1 + V) weights: image r's `weight[r]` shared by its distinct views, for `rows` only."""
        out = np.zeros((self.n, self.n_slots), np.float32)
        distinct = self.distinct[rows]
        slots = np.arange(self.n_slots)[None, :] < distinct[:, None]
        out[rows] = np.where(slots, (weight[rows] / distinct)[:, None], 0.0)
        return out


def training_views(ctx: FitContext, images: ImageSet, strong: np.ndarray) -> tuple[ViewStore, np.ndarray, list]:
    """Every image's 1 + V views in a `ViewStore` (images without augmented views repeat the eval
    view), its ok mask, and the skipped files. Extracted a chunk of images at a time, so only
    one chunk of float32 features is in memory at once."""
    cfg = ctx.cfg
    weak = ~strong if cfg.augment_human else np.zeros_like(strong)
    store, ok, skipped = None, np.ones(len(images), bool), []
    for rows, chunk in images.chunks():
        base = extract_features(ctx, chunk, kind="eval")
        skipped += base.skipped
        ok[rows] = base.ok
        if base.feats.shape[-1] == 0:  # nothing in this chunk could be decoded
            continue
        if store is None:
            store = ViewStore(len(images), 1 + cfg.n_views, base.feats.shape[-1], folder=ctx.cache.root)
        block = np.repeat(base.feats[0][:, None], 1 + cfg.n_views, axis=1)
        for kind, mask in (("weak", weak[rows]), ("strong", strong[rows])):
            idx = np.flatnonzero(mask & base.ok)
            if cfg.n_views and len(idx):
                aug = extract_features(ctx, chunk.subset(idx), kind=kind, n_views=cfg.n_views)
                block[idx, 1:] = aug.feats.transpose(1, 0, 2)
                store.distinct[rows[idx]] = 1 + cfg.n_views
                ok[rows[idx]] &= aug.ok
        store.write(int(rows[0]), block)
    if store is None:
        store = ViewStore(len(images), 1 + cfg.n_views, 0, folder=ctx.cache.root)
    return store, ok, skipped
