"""Recall measures, numpy in and numpy out.

Two conventions, both reported:
- label recall@k (seed 001's): a query counts as a hit when its label is among the labels of its
  k nearest neighbours;
- 1-recall@k (faiss's): a query counts when its exact nearest neighbour is among the k returned by
  an approximate index.
"""
from __future__ import annotations

import numpy as np


def recall_at_k(I: np.ndarray, labels_q: np.ndarray, labels_db: np.ndarray, k: int) -> float:
    """Share of queries whose label is among their first k neighbours' labels.

    Args:
        I: (Q, >=k) neighbour ids, -1 for none.  labels_q: (Q,).  labels_db: (N,).
    """
    assert I.ndim == 2 and I.shape[1] >= k and len(I) == len(labels_q), (I.shape, len(labels_q), k)
    if len(I) == 0:
        return float("nan")
    top = I[:, :k]
    hits = (labels_db[np.maximum(top, 0)] == labels_q[:, None]) & (top >= 0)
    return float(hits.any(axis=1).mean())


def one_recall_at_k(I: np.ndarray, I_exact: np.ndarray, k: int) -> float:
    """Share of queries whose exact nearest neighbour (I_exact[:, 0]) is among I[:, :k]."""
    assert I.shape[1] >= k and len(I) == len(I_exact), (I.shape, I_exact.shape, k)
    if len(I) == 0:
        return float("nan")
    return float((I[:, :k] == I_exact[:, :1]).any(axis=1).mean())


def drop_self(D: np.ndarray, I: np.ndarray, q_keys: np.ndarray, db_keys: np.ndarray, k: int):
    """Remove neighbours with the query's own key (the same image, by content hash) and keep k.

    Args: D, I (Q, k + m) from a search with m spare columns; q_keys (Q,), db_keys (N,).
    """
    same = (I >= 0) & (db_keys[np.maximum(I, 0)] == q_keys[:, None])
    order = np.argsort(same, axis=1, kind="stable")  # own matches move to the end, the rest keep order
    D, I = np.take_along_axis(D, order, 1)[:, :k], np.take_along_axis(I, order, 1)[:, :k]
    return D, I
