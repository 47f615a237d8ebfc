"""Exact distances, numpy in and numpy out: brute-force k nearest neighbours over blocks of a
database too large for memory, and exact re-ranking of an approximate index's shortlist.

Distances are Euclidean (not squared), ascending; id -1 with distance inf where fewer than k exist.
"""
from __future__ import annotations

from typing import Iterable

import faiss
import numpy as np

QUERY_CHUNK = 256  # queries re-ranked at a time: bounds the (queries, shortlist, d) difference array


def knn_blocks(q: np.ndarray, blocks: Iterable[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows to each query over consecutive (rows, d) blocks, ids counted across blocks.

    Args: q (Q, d) float32; blocks in row order, e.g. slices of a np.memmap.
    """
    q = np.ascontiguousarray(q, np.float32)
    assert q.ndim == 2 and k >= 1, (q.shape, k)
    heap, start = faiss.ResultHeap(len(q), k), 0
    for block in blocks:
        assert block.ndim == 2 and block.shape[1] == q.shape[1], (block.shape, q.shape)
        if len(block):
            D, I = faiss.knn(q, np.ascontiguousarray(block, np.float32), min(k, len(block)))
            heap.add_result(D, I + start)
        start += len(block)
    heap.finalize()
    D = np.sqrt(np.maximum(heap.D, 0))
    D[heap.I < 0] = np.inf
    return D, heap.I


def rerank(q: np.ndarray, I: np.ndarray, vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k of each query's candidates nearest by exact distance.

    Args:
        q: (Q, d) queries in the space of `vectors`.  I: (Q, s) candidate ids, -1 for none, s >= k.
        vectors: (N, d) array-like indexed by id (a np.memmap reads only the candidates' rows, in
            file order), or a callable mapping sorted unique ids to their (len(ids), d) rows.
    """
    q = np.asarray(q, np.float32)
    assert q.ndim == 2 and I.ndim == 2 and len(q) == len(I) and I.shape[1] >= k, (q.shape, I.shape, k)
    ids = np.unique(I[I >= 0])
    if len(ids) == 0:
        return np.full((len(q), k), np.inf, np.float32), np.full((len(q), k), -1, np.int64)
    rows = np.asarray(vectors(ids) if callable(vectors) else vectors[ids], np.float32)
    assert rows.shape == (len(ids), q.shape[1]), (rows.shape, len(ids), q.shape)
    where = np.searchsorted(ids, np.maximum(I, 0))
    d2 = np.empty(I.shape, np.float32)
    for s in range(0, len(q), QUERY_CHUNK):
        diff = rows[where[s: s + QUERY_CHUNK]] - q[s: s + QUERY_CHUNK, None, :]
        d2[s: s + QUERY_CHUNK] = np.einsum("qsd,qsd->qs", diff, diff)
    d2[I < 0] = np.inf
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return np.sqrt(np.take_along_axis(d2, order, 1)), np.take_along_axis(I, order, 1)
