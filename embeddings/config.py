"""Index settings: one frozen dataclass, validated on construction, saved in the manifest."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from classification.errors import InputError


@dataclass(frozen=True)
class IndexConfig:
    type: str = "flat"      # flat (exact) | ivf (inverted lists) | hnsw (graph); see embeddings/types.py
    pca: int = 128          # PCA output dimension, then L2 normalisation; 0 = no PCA
    nlist: int = 0          # ivf: number of lists; 0 = chosen from N (about 4 sqrt(N), >= 39 points each)
    nprobe: int = 16        # ivf: lists visited per query (recall against speed)
    hnsw_m: int = 32        # hnsw: graph degree
    ef_search: int = 64     # hnsw: candidate list size per query
    threads: int = 0        # faiss OpenMP threads; 0 = faiss's default (all cores)

    def __post_init__(self):
        from embeddings.types import INDEX_TYPES

        if self.type not in INDEX_TYPES:
            raise InputError(f"unknown index type {self.type!r}; valid: {', '.join(INDEX_TYPES)}")
        for name in ("pca", "nlist", "threads"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("nprobe", "hnsw_m", "ef_search"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)
