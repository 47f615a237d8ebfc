"""`EmbeddingIndex`: PCA + L2 normalisation + a FAISS index, saved as a folder without pickles.

Folder layout:
    index.faiss      faiss.write_index of the whole chain (PCA, L2norm, then flat / IVF / HNSW, or
                     OPQ + IVF-PQ); or, saved in shards, index-0.faiss .. index-{S-1}.faiss: the same
                     chain over a contiguous id range each (embeddings/shards.py)
    manifest.json    model, weights id, transform, dims, index type and factory key, metric, count,
                     explained-variance ratio of the PCA, search parameters, shard files, and the
                     SHA-256 of every other file ("digests"): a file that fails it is refused on
                     load (folders saved before digests existed load unchecked)
    metadata.csv     id, path, label, hash: one row per vector, id = faiss id = row number
    vectors.npy      only with rerank > 0: float32 vectors in the index's space, row = id

PCA output is normalised again before the search: PCA followed by a raw inner product loses
recall (faiss#2636), while unit vectors under L2 rank exactly as cosine similarity does.

Building streams (embeddings/stream.py): PCA, OPQ, IVF and PQ train on a seeded sample of at most
max(100k, 64 nlist) rows; then the vectors are added block by block, so that beyond the sample no
more than one block of float32 is in memory. Re-ranking keeps the float32 vectors out of RAM: the
index holds codes only, `search` takes k * rerank candidates from it and re-ranks them by exact
distance to their vectors, read for those ids alone from vectors.npy (memory-mapped) or from what
the caller passes. (faiss's IndexRefineFlat would hold every float32 vector in memory.)
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from classification.digest import SEAL, digests, seal_ok, sealed
from classification.errors import InputError, brief, first_line
from classification.fileio import write_csv, write_json
from embeddings.config import IndexConfig
from embeddings.exact import rerank as rerank_exact
from embeddings.shards import check_count, check_digests, join, merge, read_parts, write_parts, write_split
from embeddings.stream import (add_blocks, block_reader, first_dim, open_vectors, sample_rows, spill,
                               to_index_space, write_vectors)
from embeddings.types import create_type

FORMAT = 2  # 2 added shards and vectors.npy; format 1 folders (one index.faiss) still load
FILES = ("index.faiss", "manifest.json", "metadata.csv")
META_COLUMNS = ["id", "path", "label", "hash"]
NO_VECTORS = "re-ranking needs the exact vectors, which this index does not keep: build it with --rerank N"


def set_threads(n: int) -> None:
    """faiss's OpenMP thread count; 0 leaves faiss's default."""
    if n > 0:
        faiss.omp_set_num_threads(n)


class EmbeddingIndex:
    """A searchable set of unit vectors with their paths and labels.

    Build with `EmbeddingIndex.build`, grow with `add`, persist with `save` / `EmbeddingIndex.load`.
    `vectors` holds the exact float32 vectors for re-ranking (None unless rerank > 0); `sharded` is
    the `ShardedIndex` under `index` when it was loaded from shards.
    """

    def __init__(self, index: faiss.Index, manifest: dict, meta: pd.DataFrame, vectors=None, sharded=None):
        self.index, self.manifest, self.meta = index, manifest, meta.reset_index(drop=True)
        self.vectors, self.sharded, self.read_only = vectors, sharded, False

    @classmethod
    def build(cls, feats, meta: pd.DataFrame, cfg: IndexConfig = IndexConfig(),
              provenance: dict | None = None) -> "EmbeddingIndex":
        """Train on a sample of `feats` and add them all, block by block. `feats`: an (N, D) array or
        np.memmap, or a callable returning a fresh iterator over (rows, D) blocks, N rows in all;
        `meta` holds path, label, hash for each of the N rows."""
        n, blocks = len(meta), block_reader(feats)
        dim = first_dim(blocks) if callable(feats) else _check_feats(feats, n)[1]
        if n == 0 or dim is None:
            raise InputError("cannot build an index from zero images")
        kind = create_type(cfg.type)
        pca = min(cfg.pca, dim, max(n - 1, 1)) if cfg.pca else 0
        key = (f"PCA{pca},L2norm," if pca else "L2norm,") + kind.factory(n, pca or dim, cfg)
        index = faiss.index_factory(dim, key, faiss.METRIC_L2)
        kind.prepare(index)
        if not index.is_trained:
            index.train(sample_rows(blocks, n, kind.train_size(n, cfg), cfg.seed))
        vectors = spill(n, pca or dim) if cfg.rerank else None
        added = add_blocks(index, blocks, dim, vectors, 0)
        if added != n:
            raise ValueError(f"feature blocks hold {added} rows for {n} metadata rows")
        manifest = {"format": FORMAT, **(provenance or {}), "input_dim": dim, "pca_dim": pca,
                    "index_type": cfg.type, "factory": key, "metric": "l2 on unit vectors",
                    "count": int(index.ntotal), "explained_variance_ratio": _explained(index, pca),
                    "vectors": vectors is not None, "config": cfg.to_dict()}
        out = cls(index, manifest, _with_ids(meta, 0), vectors)
        out.tune()
        return out

    @property
    def config(self) -> IndexConfig:
        return IndexConfig(**self.manifest["config"])

    @property
    def parts(self) -> list:
        """The full indexes that hold the vectors: the shards, or the index itself."""
        return self.sharded.parts if self.sharded is not None else [self.index]

    def tune(self, **changes) -> None:
        """Apply search parameters (nprobe, ef_search, rerank) from the manifest, updated by `changes`."""
        self.manifest["config"].update({k: v for k, v in changes.items() if v is not None})
        kind, cfg = create_type(self.manifest["index_type"]), self.config
        if cfg.rerank and self.vectors is None:
            raise InputError(NO_VECTORS)
        for part in self.parts:
            kind.tune(part, cfg)

    def add(self, feats: np.ndarray, meta: pd.DataFrame) -> None:
        """Append vectors (an array or np.memmap, read block by block) without retraining PCA or
        cells (fine while the data look alike). A sharded index grows its last shard."""
        _check_feats(feats, len(meta), self.manifest["input_dim"])
        n0 = int(self.index.ntotal)
        if self.vectors is not None:
            self.vectors = spill(n0 + len(meta), self.vectors.shape[1], old=self.vectors)
        target = self.sharded.parts[-1] if self.sharded is not None else self.index
        add_blocks(target, block_reader(feats), feats.shape[1], self.vectors, n0)
        if self.sharded is not None:
            self.sharded.syncWithSubIndexes()
            self.index.ntotal = self.sharded.ntotal
        self.meta = pd.concat([self.meta, _with_ids(meta, len(self.meta))], ignore_index=True)
        self.manifest["count"] = int(self.index.ntotal)

    def search(self, feats: np.ndarray, k: int, rerank: int | None = None,
               rerank_with=None) -> tuple[np.ndarray, np.ndarray]:
        """Distances (Euclidean between unit vectors, ascending) and ids of the k nearest; id -1
        (distance inf) where the index holds fewer than k vectors.

        With a re-ranking factor (`rerank`, by default the config's), the index's k * rerank best
        candidates are re-ranked by exact distance to their float32 vectors in the index's space
        (what `transform` returns): `rerank_with`, an (N, d) array-like such as a np.memmap or a
        callable from ids to rows, else the vectors the index keeps. Without it an ivfpq index
        returns the approximate distances of its codes."""
        _check_feats(feats, len(feats), self.manifest["input_dim"])
        if type(k) is not int or k < 1:
            raise InputError(f"-k must be a whole number >= 1, got {brief(k)}")
        x = np.ascontiguousarray(feats, np.float32)
        factor = self.config.rerank if rerank is None else rerank
        source = rerank_with if rerank_with is not None else self.vectors
        if factor < 0:
            raise InputError(f"rerank must be >= 0, got {factor}")
        if factor and source is None:
            raise InputError(NO_VECTORS + ", or pass rerank_with")
        D, I = self.index.search(x, k * factor if factor else k)
        if factor:
            return rerank_exact(self.transform(x), I, source, k)
        D = np.sqrt(np.maximum(D, 0))
        D[I < 0] = np.inf
        return D, I

    @property
    def base(self) -> faiss.Index:
        """The searching index after the PCA / L2norm chain (a `ShardedIndex` for a sharded one)."""
        if self.sharded is not None:
            return self.sharded
        inner = self.index.index if isinstance(self.index, faiss.IndexPreTransform) else self.index
        return faiss.downcast_index(inner)

    def transform(self, feats: np.ndarray) -> np.ndarray:
        """Vectors in the index's space: after PCA and L2 normalisation, (N, pca_dim). An OPQ rotation
        (ivfpq) is left out: it is orthonormal, so distances are the same without it."""
        return to_index_space(self.index, np.ascontiguousarray(feats, np.float32))

    def memory_bytes(self) -> int:
        """Bytes of the faiss index (codes, ids, quantisers, transforms), summed over shards, as
        faiss serialises it; the kept float32 vectors stay on disk and are not counted."""
        return sum(int(faiss.serialize_index(part).size) for part in self.parts)

    def save(self, folder: str | Path, shards: int | None = None) -> None:
        """Write the files to a new sibling folder, then swap it in: a crash leaves either the old
        index or the new one, never a mix. `shards` > 1 writes that many index-{i}.faiss files of
        contiguous id ranges; None keeps the index's layout (its shards, else one file)."""
        count = shards if shards is not None else len(self.parts)
        check_count(count, self.manifest["count"], create_type(self.manifest["index_type"]))
        if self.read_only:
            raise InputError("an index loaded with mmap is read-only; load it without mmap to save it")
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            entries = self._write_index(tmp, count)
            if self.vectors is not None:
                write_vectors(tmp / "vectors.npy", self.vectors)
            write_csv(tmp / "metadata.csv", self.meta[META_COLUMNS])
            names = [e["file"] for e in entries] or ["index.faiss"]
            self.manifest.update(format=FORMAT, vectors=self.vectors is not None, shards=entries,
                                 digests=digests(tmp, [*names, "vectors.npy", "metadata.csv"]))
            write_json(tmp / "manifest.json", sealed(self.manifest))  # hand edits show
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            if folder.exists():
                folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _write_index(self, folder: Path, count: int) -> list[dict]:
        if count > 1 and len(self.parts) == count:
            return write_parts(self.parts, folder)
        single = self.index if self.sharded is None else merge(self.parts)
        if count > 1:
            return write_split(single, count, folder)
        faiss.write_index(single, str(folder / "index.faiss"))
        return []

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = False) -> "EmbeddingIndex":
        """Read a saved index and check that its parts agree. `mmap` maps IVF lists from disk
        read-only (no `add` or `save` then); other types are read into memory."""
        folder = Path(folder)
        manifest = _read_json(folder / "manifest.json") if (folder / "manifest.json").is_file() else {}
        entries = manifest.get("shards") or []
        missing = [f for f in FILES if not (folder / f).is_file() and not (entries and f == "index.faiss")]
        if missing:
            raise InputError(f"{folder} is not an index folder (missing {', '.join(missing)})")
        check_digests(folder, manifest.get("digests"))
        try:
            meta = pd.read_csv(folder / "metadata.csv", dtype={"label": str, "path": str, "hash": str},
                               keep_default_na=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read index {folder}: {first_line(e)}") from None
        ivf = manifest.get("index_type") in ("ivf", "ivfpq")
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap and ivf else 0
        sharded, problems = None, []
        if entries:
            parts, problems = read_parts(folder, entries, flags)
            index, sharded = join(parts)
        else:
            try:
                index = faiss.read_index(str(folder / "index.faiss"), flags)
            except RuntimeError as e:
                raise InputError(f"cannot read {folder / 'index.faiss'}: {first_line(e)}") from None
        vectors = None
        if manifest.get("vectors"):
            shape = (manifest.get("count"), manifest.get("pca_dim") or manifest.get("input_dim"))
            vectors = open_vectors(folder / "vectors.npy", shape, problems)
        _check_consistent(folder, manifest, index, meta, problems)
        out = cls(index, manifest, meta, vectors, sharded)
        out.read_only = bool(flags)
        out.tune()
        return out


def _check_feats(feats: np.ndarray, n_meta: int, dim: int | None = None) -> tuple[int, int]:
    if feats.ndim != 2 or len(feats) != n_meta:
        raise ValueError(f"feats must be (N, D) with one metadata row each; got {feats.shape}, {n_meta} rows")
    if dim is not None and feats.shape[1] != dim:
        raise InputError(f"vectors have {feats.shape[1]} dimensions but the index takes {dim}")
    return feats.shape


def _with_ids(meta: pd.DataFrame, start: int) -> pd.DataFrame:
    out = meta.reindex(columns=META_COLUMNS[1:]).fillna("").astype(str).reset_index(drop=True)
    out.insert(0, "id", np.arange(start, start + len(out)))
    return out


def _explained(index: faiss.Index, pca: int) -> float | None:
    if not pca:
        return None
    matrix = faiss.downcast_VectorTransform(index.chain.at(0))
    eig = faiss.vector_to_array(matrix.eigenvalues)
    return float(eig[:pca].sum() / eig.sum()) if eig.sum() > 0 else None


def _read_json(path: Path) -> dict:
    """manifest.json: a mapping whose seal (when it has one) matches its content; unsealed
    manifests (saved before seals existed) are read as they are."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read index {path.parent}: {first_line(e)}") from None
    if not isinstance(doc, dict) or seal_ok(doc) is False:
        raise InputError(f"{path} is damaged (not a mapping, or its SHA-256 does not match its content); "
                         "rebuild the index with `autolabel index build`")
    return {k: v for k, v in doc.items() if k != SEAL}


def _check_consistent(folder: Path, manifest: dict, index: faiss.Index, meta: pd.DataFrame,
                      problems: list[str]) -> None:
    if manifest.get("format") not in (1, FORMAT):
        problems.append(f"format {manifest.get('format')!r} is not {FORMAT}")
    if manifest.get("count") != index.ntotal:
        problems.append(f"manifest count {manifest.get('count')} but index holds {index.ntotal}")
    if manifest.get("input_dim") != index.d:
        problems.append(f"manifest input_dim {manifest.get('input_dim')} but index takes {index.d}")
    if len(meta) != index.ntotal or list(meta.get("id", [])) != list(range(len(meta))):
        problems.append(f"metadata.csv has {len(meta)} rows (ids 0..N-1 expected) for {index.ntotal} vectors")
    if problems:
        raise InputError(f"index {folder} does not match its manifest: {'; '.join(problems)}")
