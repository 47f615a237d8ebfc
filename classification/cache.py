"""On-disk feature cache.

Features are stored per *namespace* (model, backbone weights, transform, view, input size: see
`namespace`) and, inside it, per image content hash. Each write is one new `.npz` shard, written
atomically; zip's CRC-32 is checked when a shard is read, so a torn or corrupted shard is
detected, deleted and its rows recomputed. Nothing is ever pickled.

A cache with a folder keeps only an index (key -> shard, row) in memory and reads the rows it is
asked for from their shards, so memory does not grow with the pool; without a folder the rows
live in memory.
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
_DAMAGE = (OSError, ValueError, KeyError, AssertionError, zipfile.BadZipFile, EOFError)


def namespace(**parts) -> str:
    """A stable short id for everything that determines a feature vector besides the image."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


class FeatureCache:
    """Feature vectors keyed by (namespace, content hash). `root=None` keeps them in memory only."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self._mem: dict[str, dict[str, np.ndarray]] = {}  # root=None: the rows themselves
        self._index: dict[str, dict[str, tuple[str, int]]] = {}  # root: key -> (shard name, row)
        self.hits = 0
        self.misses = 0
        self.stored = 0  # rows written: one backbone pass each (for the pass-count checks)

    def get(self, ns: str, keys: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """Return (feats (N, D) with zeros where missing, or None if nothing hit; hit mask (N,)).

        Rows keep the dtype they were stored with: float32 features, float16 feature maps."""
        if self.root is None:
            table = self._mem.setdefault(ns, {})
            hit = np.array([k in table for k in keys], dtype=bool)
            feats = self._gather_mem(table, keys, hit)
        else:
            feats, hit = self._gather_disk(ns, keys)
        self.hits += int(hit.sum())
        self.misses += int((~hit).sum())
        return feats, hit

    def put(self, ns: str, keys: list[str], feats: np.ndarray) -> None:
        assert feats.ndim == 2 and len(keys) == len(feats), (feats.shape, len(keys))
        if not keys:
            return
        feats = np.asarray(feats, np.float16 if feats.dtype == np.float16 else np.float32)
        self.stored += len(keys)
        if self.root is None:
            self._mem.setdefault(ns, {}).update(zip(keys, feats.copy()))
            return
        shard = self.root / ns / f"shard-{uuid.uuid4().hex}.npz"
        with atomic_path(shard) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(keys, dtype="U32"), feats=feats)
        self._shards(ns).update((k, (shard.name, i)) for i, k in enumerate(keys))

    @staticmethod
    def _gather_mem(table: dict, keys: list[str], hit: np.ndarray) -> np.ndarray | None:
        if not hit.any():
            return None
        first = table[keys[int(np.argmax(hit))]]
        feats = np.zeros((len(keys), first.shape[0]), first.dtype)
        for i in np.flatnonzero(hit):
            feats[i] = table[keys[i]]
        return feats

    def _gather_disk(self, ns: str, keys: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """Read the asked-for rows shard by shard; a shard that fails its check is deleted and
        its rows count as misses."""
        index = self._shards(ns)
        wanted: dict[str, list[tuple[int, int]]] = {}
        for i, k in enumerate(keys):
            if k in index:
                name, row = index[k]
                wanted.setdefault(name, []).append((i, row))
        hit = np.zeros(len(keys), bool)
        feats = None
        for name, pairs in wanted.items():
            out, src = np.array(pairs).T
            rows = self._read_shard(ns, name, int(src.max()) + 1)
            if rows is None:
                continue
            if feats is None:
                feats = np.zeros((len(keys), rows.shape[1]), rows.dtype)
            feats[out] = rows[src]
            hit[out] = True
        return feats, hit

    def _read_shard(self, ns: str, name: str, min_rows: int) -> np.ndarray | None:
        shard = self.root / ns / name
        try:
            with np.load(shard, allow_pickle=False) as z:
                rows = z["feats"]
            assert rows.ndim == 2 and len(rows) >= min_rows, rows.shape
            return rows
        except _DAMAGE as e:
            self._drop(ns, shard, e)
            return None

    def _shards(self, ns: str) -> dict[str, tuple[str, int]]:
        """The namespace's key index, built once from the shards' key lists."""
        if ns in self._index:
            return self._index[ns]
        index: dict[str, tuple[str, int]] = {}
        self._index[ns] = index
        folder = self.root / ns
        for shard in sorted(folder.glob("shard-*.npz")) if folder.is_dir() else []:
            try:
                with np.load(shard, allow_pickle=False) as z:
                    keys = z["keys"].tolist()
            except _DAMAGE as e:
                self._drop(ns, shard, e)
                continue
            index.update((k, (shard.name, i)) for i, k in enumerate(keys))
        return index

    def _drop(self, ns: str, shard: Path, why: Exception) -> None:
        _logger.warning("feature cache shard %s is damaged (%s); it will be rebuilt", shard, why)
        shard.unlink(missing_ok=True)
        index = self._index.get(ns, {})
        for k in [k for k, (name, _) in index.items() if name == shard.name]:
            del index[k]
