"""Index types: one small class each, registered in `INDEX_TYPES`.

Every type indexes unit vectors (PCA output, L2-normalised) with the L2 metric, so a distance is
the Euclidean distance between unit vectors: 0 for the same direction, sqrt(2) for orthogonal.
Ids are row numbers of the metadata table and grow on `add`; nothing is ever removed, so no type
needs an `IndexIDMap`.
"""
from __future__ import annotations

import math

import faiss


class Flat:
    """Exact search."""

    name = "flat"

    def factory(self, n: int, cfg) -> str:
        return "Flat"

    def tune(self, index, cfg) -> None:
        pass


class IVF:
    """Inverted lists over k-means cells: visits `nprobe` of `nlist` cells per query."""

    name = "ivf"

    def nlist(self, n: int, cfg) -> int:
        if cfg.nlist:
            return min(cfg.nlist, max(n, 1))
        return max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per cell

    def factory(self, n: int, cfg) -> str:
        return f"IVF{self.nlist(n, cfg)},Flat"

    def tune(self, index, cfg) -> None:
        faiss.extract_index_ivf(index).nprobe = cfg.nprobe


class HNSW:
    """Hierarchical navigable small-world graph: no training, fast queries, more memory."""

    name = "hnsw"

    def factory(self, n: int, cfg) -> str:
        return f"HNSW{cfg.hnsw_m}"

    def tune(self, index, cfg) -> None:
        base = faiss.downcast_index(index.index if isinstance(index, faiss.IndexPreTransform) else index)
        base.hnsw.efSearch = cfg.ef_search


INDEX_TYPES = {cls.name: cls for cls in (Flat, IVF, HNSW)}


def create_type(name: str):
    return INDEX_TYPES[name]()
