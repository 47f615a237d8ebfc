"""Torch datasets over image files. Bad files are handled inside the dataset: a sample that
cannot be decoded comes back as a skip with its reason, and the batch carries on without it."""
from __future__ import annotations

import os
import zlib

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from classification.images import BadImage, decode


def view_seed(digest: str, view: int, salt: int = 0) -> int:
    """Deterministic augmentation seed for (image content, view index, salt)."""
    return zlib.crc32(f"{digest}:{view}:{salt}".encode()) & 0x7FFFFFFF


class ImageDataset(Dataset):
    """Decodes `paths[i]` once and applies `transform` once per view.

    `seeds[i]` lists one augmentation seed per view of image i; without seeds there is one
    unseeded view. Returns `(i, tensor (V, C, H, W) float32, None)`, or `(i, None, reason)` for a
    file that cannot be decoded.
    """

    def __init__(self, paths: list[str], transform, seeds: list[list[int]] | None = None,
                 draft_size: int | None = None):
        self.paths, self.transform, self.seeds, self.draft_size = paths, transform, seeds, draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = decode(self.paths[i], draft_size=self.draft_size)
        except BadImage as e:
            return i, None, str(e)
        views = []
        for seed in (self.seeds[i] if self.seeds is not None else [None]):
            if seed is not None:
                self.transform.set_random_seed(seed)
            x = self.transform(image=img)["image"]
            views.append(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))))
        return i, torch.stack(views), None


def collate(batch):
    """(indices of decoded samples, tensor (B, V, C, H, W) or None, [(index, reason) of skipped])."""
    good = [(i, x) for i, x, _ in batch if x is not None]
    bad = [(i, why) for i, x, why in batch if x is None]
    if not good:
        return torch.empty(0, dtype=torch.long), None, bad
    idx = torch.tensor([i for i, _ in good], dtype=torch.long)
    return idx, torch.stack([x for _, x in good]), bad


def default_workers() -> int:
    """Decoding workers: one per core beyond the first, which the model uses."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def make_loader(dataset: Dataset, batch_size: int, workers: int | None = None,
                shuffle: bool = False, seed: int = 0, batches: list[list[int]] | None = None) -> DataLoader:
    """Batches in order (or shuffled with `seed`), or exactly the index lists `batches`."""
    workers = default_workers() if workers is None else workers
    gen = torch.Generator().manual_seed(seed)
    sizing = ({"batch_sampler": batches} if batches is not None else
              {"batch_size": batch_size, "shuffle": shuffle, "generator": gen})
    return DataLoader(dataset, num_workers=workers, collate_fn=collate, persistent_workers=False, **sizing,
                      prefetch_factor=4 if workers else None)
