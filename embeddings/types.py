"""Index types: one small class each, registered in `INDEX_TYPES`.

Every type indexes unit vectors (PCA output, L2-normalised) with the L2 metric, so a distance is
the Euclidean distance between unit vectors: 0 for the same direction, sqrt(2) for orthogonal.
Ids are row numbers of the metadata table and grow on `add`; nothing is ever removed, so no type
needs an `IndexIDMap`.

A type gives the factory key of its part after the PCA / L2norm chain (`factory(n, d, cfg)`, d the
dimension it receives) and the size of the training sample (`train_size`), sets training
parameters on the new index (`prepare`) and applies search parameters (`tune`). `shardable` says
whether its vectors can be cut into contiguous id ranges that search together exactly like the
whole (embeddings/shards.py).
"""
from __future__ import annotations

import math

import faiss

from classification.errors import InputError
from classification.registry import lookup

TRAIN_MIN = 100_000  # rows sampled for training at least (PCA, OPQ and PQ need no more)
TRAIN_PER_LIST = 64  # and per inverted list: k-means quality barely moves beyond this (faiss caps at 256)
OPQ_ITERATIONS = 25  # faiss's 50 took 17 s against 10 s on 10k x 64 here, for 1-recall@10 0.958 against
                     # 0.944 on anisotropic (PCA-like) data, and the same once 2 k candidates are re-ranked


class Flat:
    """Exact search."""

    name = "flat"
    shardable = True

    def factory(self, n: int, d: int, cfg) -> str:
        return "Flat"

    def train_size(self, n: int, cfg) -> int:
        return min(n, cfg.train_size or TRAIN_MIN)

    def prepare(self, index) -> None:
        pass

    def tune(self, index, cfg) -> None:
        pass


class IVF(Flat):
    """Inverted lists over k-means cells: visits `nprobe` of `nlist` cells per query."""

    name = "ivf"

    def nlist(self, n: int, cfg) -> int:
        if cfg.nlist:
            return min(cfg.nlist, max(n, 1))
        return max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per cell

    def factory(self, n: int, d: int, cfg) -> str:
        return f"IVF{self.nlist(n, cfg)},Flat"

    def train_size(self, n: int, cfg) -> int:
        nlist = self.nlist(n, cfg)
        size = min(n, cfg.train_size or max(TRAIN_MIN, TRAIN_PER_LIST * nlist))
        if size < nlist:
            raise InputError(f"train_size {size} is below nlist {nlist}: k-means needs a point per list at least")
        return size

    def tune(self, index, cfg) -> None:
        faiss.extract_index_ivf(index).nprobe = cfg.nprobe


class IVFPQ(IVF):
    """IVF over an OPQ rotation, storing product-quantised codes: `pq_m` bytes and an 8-byte id per
    vector instead of 4 d bytes of float32. The default pq_m, d / 8 (8 dimensions per 8-bit
    subquantizer), costs 1/32 + 2/d of a flat index: within 1/8 for d >= 32. Its distances are
    approximate; `EmbeddingIndex.search` re-ranks a shortlist exactly against float32 vectors kept
    on disk when asked (`rerank`), which is what makes the coarse codes good enough.

    8 dimensions per subquantizer rather than 4: faiss's k-means trains about ten times slower on
    4-d subvectors (OPQ + PQ on 20k x 64 here: 70 s against 5 s), for a recall that re-ranking
    makes up. A training sample under 256 rows gets codes of fewer bits and no OPQ (both train
    2^bits centroids per subspace). faiss's per-list distance tables (nlist * pq_m * 256 floats,
    100 MB at 10M vectors) are not kept: for the small d of PCA output they save little time.
    """

    name = "ivfpq"

    def pq_m(self, d: int, cfg) -> int:
        if cfg.pq_m:
            if d % cfg.pq_m:
                fits = [m for m in (4, 8, 16, 32, 64) if d % m == 0 and m < d]
                raise InputError(f"pq_m {cfg.pq_m} must divide the index dimension {d}"
                                 + (f"; try {', '.join(map(str, fits))}" if fits else ""))
            return cfg.pq_m
        return max(m for m in range(1, max(1, d // 8) + 1) if d % m == 0)

    def factory(self, n: int, d: int, cfg) -> str:
        n_train = self.train_size(n, cfg)
        if n_train < 2:
            raise InputError(f"an ivfpq index needs 2 vectors at least to train its codes, got {n_train}")
        m, bits = self.pq_m(d, cfg), min(8, int(math.log2(n_train)))
        opq = f"OPQ{m}," if bits == 8 else ""
        return f"{opq}IVF{self.nlist(n, cfg)},PQ{m}x{bits}np"  # np: no polysemous training (unused, slow)

    def prepare(self, index) -> None:
        for i in range(index.chain.size()):
            vt = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.niter = OPQ_ITERATIONS

    def tune(self, index, cfg) -> None:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.nprobe = cfg.nprobe
        if ivf.use_precomputed_table != -1:  # read_index builds the tables: free them
            ivf.use_precomputed_table = -1
            ivf.precompute_table()


class HNSW(Flat):
    """Hierarchical navigable small-world graph: no training, fast queries, more memory."""

    name = "hnsw"
    shardable = False  # one graph over all vectors: parts of it would not search like the whole

    def factory(self, n: int, d: int, cfg) -> str:
        return f"HNSW{cfg.hnsw_m}"

    def tune(self, index, cfg) -> None:
        base = faiss.downcast_index(index.index if isinstance(index, faiss.IndexPreTransform) else index)
        base.hnsw.efSearch = cfg.ef_search


INDEX_TYPES = {cls.name: cls for cls in (Flat, IVF, HNSW, IVFPQ)}


def create_type(name: str):
    return lookup("index type", INDEX_TYPES, name)()
