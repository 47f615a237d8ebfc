"""On-disk feature cache.

Features are stored per *namespace* (model, backbone weights, transform, view, input size: see
`namespace`) and, inside it, per image content hash. Each write is one new `.npz` shard, written
atomically; zip's CRC-32 is checked when a shard is read, so a torn or corrupted shard is
detected, deleted and its rows recomputed. Nothing is ever pickled.
"""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
import zipfile
from pathlib import Path

import numpy as np

from classification.fileio import atomic_path

_logger = logging.getLogger(__name__)


def namespace(**parts) -> str:
    """A stable short id for everything that determines a feature vector besides the image."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


class FeatureCache:
    """Feature vectors keyed by (namespace, content hash). `root=None` keeps them in memory only."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self._mem: dict[str, dict[str, np.ndarray]] = {}
        self.hits = 0
        self.misses = 0
        self.stored = 0  # rows written: one backbone pass each (for the pass-count checks)

    def get(self, ns: str, keys: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """Return (feats (N, D) with zeros where missing, or None if nothing hit; hit mask (N,)).

        Rows keep the dtype they were stored with: float32 features, float16 feature maps."""
        table = self._table(ns)
        hit = np.array([k in table for k in keys], dtype=bool)
        self.hits += int(hit.sum())
        self.misses += int((~hit).sum())
        if not hit.any():
            return None, hit
        first = next(iter(table.values()))
        feats = np.zeros((len(keys), first.shape[0]), first.dtype)
        for i in np.flatnonzero(hit):
            feats[i] = table[keys[i]]
        return feats, hit

    def put(self, ns: str, keys: list[str], feats: np.ndarray) -> None:
        assert feats.ndim == 2 and len(keys) == len(feats), (feats.shape, len(keys))
        if not keys:
            return
        table = self._table(ns)
        feats = np.asarray(feats, np.float16 if feats.dtype == np.float16 else np.float32)
        table.update(zip(keys, feats))
        self.stored += len(keys)
        if self.root is None:
            return
        shard = self.root / ns / f"shard-{uuid.uuid4().hex}.npz"
        with atomic_path(shard) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(keys, dtype="U32"), feats=feats)

    def _table(self, ns: str) -> dict[str, np.ndarray]:
        if ns not in self._mem:
            self._mem[ns] = self._load(ns)
        return self._mem[ns]

    def _load(self, ns: str) -> dict[str, np.ndarray]:
        table: dict[str, np.ndarray] = {}
        if self.root is None or not (self.root / ns).is_dir():
            return table
        for shard in sorted((self.root / ns).glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as z:
                    keys, feats = z["keys"], z["feats"]
                assert len(keys) == len(feats)
            except (OSError, ValueError, KeyError, AssertionError, zipfile.BadZipFile, EOFError) as e:
                _logger.warning("feature cache shard %s is damaged (%s); it will be rebuilt", shard, e)
                shard.unlink(missing_ok=True)
                continue
            table.update(zip(keys.tolist(), feats))
        return table
