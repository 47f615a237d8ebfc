"""Features in blocks: sources read one block at a time, a seeded training sample drawn from them,
and float32 vectors kept in files rather than in RAM (a temporary one while building, vectors.npy
in a saved index).

A source is an (N, D) array, which is read block by block (so a `np.memmap` never comes into
memory whole), or a callable that returns a fresh iterator over (rows, D) blocks each time it is
called: building reads it twice, once for the training sample and once for the adds.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Iterator

import faiss
import numpy as np

from classification.errors import InputError, first_line

BLOCK_ROWS = 65_536  # 16 MB of float32 at D = 64

Blocks = Callable[[], Iterator[np.ndarray]]


def block_reader(feats, rows: int = BLOCK_ROWS) -> Blocks:
    """A callable yielding contiguous float32 (rows, D) blocks of `feats` (array or block callable)."""
    if callable(feats):
        return lambda: (_as_block(b) for b in feats())
    if getattr(feats, "ndim", None) != 2:
        raise ValueError(f"feats must be (N, D) or a callable yielding (rows, D) blocks; got {type(feats).__name__} "
                         f"of shape {getattr(feats, 'shape', None)}")
    return lambda: (_as_block(feats[s: s + rows]) for s in range(0, len(feats), rows))


def _as_block(block) -> np.ndarray:
    block = np.ascontiguousarray(block, np.float32)
    if block.ndim != 2:
        raise ValueError(f"a feature block must be (rows, D), got shape {block.shape}")
    return block


def first_dim(blocks: Blocks) -> int | None:
    """D of the first block, None for a source without rows."""
    block = next(iter(blocks()), None)
    return None if block is None else block.shape[1]


def sample_rows(blocks: Blocks, n: int, size: int, seed: int) -> np.ndarray:
    """`size` of the `n` rows, drawn uniformly without replacement by a seeded generator and gathered
    in one pass, in row order: the same rows for an array and for any cut of it into blocks."""
    take = np.arange(n) if size >= n else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    out, got, start = None, 0, 0
    for block in blocks():
        lo, hi = np.searchsorted(take, [start, start + len(block)])
        if out is None:
            out = np.empty((len(take), block.shape[1]), np.float32)
        out[got: got + hi - lo] = block[take[lo:hi] - start]
        got, start = got + hi - lo, start + len(block)
    if start != n:
        raise ValueError(f"feature blocks hold {start} rows for {n} metadata rows")
    return out


def spill(n: int, d: int, old=None) -> np.memmap:
    """An (n, d) float32 array backed by an unlinked temporary file in TMPDIR (freed with the array):
    its pages go to disk under memory pressure instead of counting against RAM, so TMPDIR should be
    a disk rather than a tmpfs for large builds. Rows of `old` are copied in."""
    with tempfile.TemporaryFile(prefix="autolabel-vectors-") as f:
        f.truncate(max(n, 1) * d * 4)
        out = np.memmap(f, np.float32, "r+", shape=(n, d))
    for s in range(0, 0 if old is None else len(old), BLOCK_ROWS):
        e = min(len(old), s + BLOCK_ROWS)
        out[s:e] = old[s:e]
    return out


def write_vectors(path: Path, vectors) -> None:
    """Save (N, d) float32 rows as .npy, copied block by block."""
    out = np.lib.format.open_memmap(path, "w+", np.float32, tuple(vectors.shape))
    for s in range(0, len(vectors), BLOCK_ROWS):
        out[s: s + BLOCK_ROWS] = vectors[s: s + BLOCK_ROWS]
    out.flush()


def open_vectors(path: Path, shape: tuple, problems: list[str]) -> np.ndarray:
    """A saved .npy memory-mapped read-only; a shape or dtype other than float32 `shape` is noted
    in `problems`."""
    try:
        vectors = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the exact vectors {path}: {first_line(e)}") from None
    if vectors.shape != tuple(shape) or vectors.dtype != np.float32:
        problems.append(f"{path.name} is {vectors.dtype} {vectors.shape}, float32 {tuple(shape)} expected")
    return vectors


def add_blocks(index: faiss.Index, blocks, dim: int, vectors, start: int) -> int:
    """Add every block to `index` (and its index-space rows to `vectors` from row `start`); the count."""
    n = 0
    for block in blocks():
        if block.shape[1] != dim:
            raise InputError(f"vectors have {block.shape[1]} dimensions but the index takes {dim}")
        index.add(block)
        if vectors is not None:
            vectors[start + n: start + n + len(block)] = to_index_space(index, block)
        n += len(block)
    return n


def to_index_space(index: faiss.Index, x: np.ndarray) -> np.ndarray:
    """`x` through the chain up to its L2 normalisation; what follows (an OPQ rotation, which reads
    back from disk as a plain LinearTransform) is orthonormal and left out."""
    if not isinstance(index, faiss.IndexPreTransform):
        return x
    for i in range(index.chain.size()):
        vt = faiss.downcast_VectorTransform(index.chain.at(i))
        x = vt.apply(x)
        if isinstance(vt, faiss.NormalizationTransform):
            break
    return x
