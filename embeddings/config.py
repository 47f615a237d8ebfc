"""Index settings: one frozen dataclass, validated on construction, saved in the manifest."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from classification.errors import InputError
from classification.registry import check_name
from embeddings.types import INDEX_TYPES


@dataclass(frozen=True)
class IndexConfig:
    type: str = "flat"      # flat (exact) | ivf (inverted lists) | hnsw (graph) | ivfpq (compressed); embeddings/types.py
    pca: int = 128          # PCA output dimension, then L2 normalisation; 0 = no PCA
    nlist: int = 0          # ivf, ivfpq: number of lists; 0 = chosen from N (about 4 sqrt(N), >= 39 points each)
    nprobe: int = 16        # ivf, ivfpq: lists visited per query (recall against speed)
    hnsw_m: int = 32        # hnsw: graph degree
    ef_search: int = 64     # hnsw: candidate list size per query
    pq_m: int = 0           # ivfpq: code bytes per vector (8-bit subquantizers), a divisor of d; 0 = about d/8
    rerank: int = 0         # search k * rerank candidates, then re-rank them by exact distance to the float32
                            # vectors the index keeps on disk (vectors.npy); 0 = no re-ranking, no vectors kept
    train_size: int = 0     # rows sampled to train PCA / OPQ / IVF / PQ; 0 = max(100k, 64 nlist), at most N
    seed: int = 0           # draw of that sample (the same rows whatever the block sizes)
    threads: int = 0        # faiss OpenMP threads; 0 = faiss's default (all cores)

    def __post_init__(self):
        check_name("index type", self.type, INDEX_TYPES)
        for name in ("pca", "nlist", "pq_m", "rerank", "train_size", "seed", "threads"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("nprobe", "hnsw_m", "ef_search"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)
