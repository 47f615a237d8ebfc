"""`EmbeddingIndex`: PCA + L2 normalisation + a FAISS index, saved as a folder without pickles.

Folder layout:
    index.faiss     faiss.write_index of the whole chain (PCA, L2norm, then flat / IVF / HNSW)
    manifest.json   model, weights id, transform, dims, index type and factory key, metric, count,
                    explained-variance ratio of the PCA, search parameters
    metadata.csv    id, path, label, hash: one row per vector, id = faiss id = row number

PCA output is normalised again before the search: PCA followed by a raw inner product loses
recall (faiss#2636), while unit vectors under L2 rank exactly as cosine similarity does.
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

from classification.errors import InputError, first_line
from classification.fileio import write_csv, write_json
from embeddings.config import IndexConfig
from embeddings.types import create_type

FORMAT = 1
FILES = ("index.faiss", "manifest.json", "metadata.csv")
META_COLUMNS = ["id", "path", "label", "hash"]


def set_threads(n: int) -> None:
    """faiss's OpenMP thread count; 0 leaves faiss's default."""
    if n > 0:
        faiss.omp_set_num_threads(n)


class EmbeddingIndex:
    """A searchable set of unit vectors with their paths and labels.

    Build with `EmbeddingIndex.build`, grow with `add`, persist with `save` / `EmbeddingIndex.load`.
    """

    def __init__(self, index: faiss.Index, manifest: dict, meta: pd.DataFrame):
        self.index, self.manifest, self.meta = index, manifest, meta.reset_index(drop=True)

    @classmethod
    def build(cls, feats: np.ndarray, meta: pd.DataFrame, cfg: IndexConfig = IndexConfig(),
              provenance: dict | None = None) -> "EmbeddingIndex":
        """Train PCA (and IVF cells) on `feats` (N, D) and add them. `meta` holds path, label, hash."""
        n, dim = _check_feats(feats, len(meta))
        if n == 0:
            raise InputError("cannot build an index from zero images")
        pca = min(cfg.pca, dim, max(n - 1, 1)) if cfg.pca else 0
        kind = create_type(cfg.type)
        key = (f"PCA{pca},L2norm," if pca else "L2norm,") + kind.factory(n, cfg)
        index = faiss.index_factory(dim, key, faiss.METRIC_L2)
        x = np.ascontiguousarray(feats, np.float32)
        index.train(x)
        index.add(x)
        manifest = {"format": FORMAT, **(provenance or {}), "input_dim": dim, "pca_dim": pca,
                    "index_type": cfg.type, "factory": key, "metric": "l2 on unit vectors",
                    "count": int(index.ntotal), "explained_variance_ratio": _explained(index, pca),
                    "config": cfg.to_dict()}
        out = cls(index, manifest, _with_ids(meta, 0))
        out.tune()
        return out

    @property
    def config(self) -> IndexConfig:
        return IndexConfig(**self.manifest["config"])

    def tune(self, **changes) -> None:
        """Apply search parameters (nprobe, ef_search) from the manifest, updated by `changes`."""
        self.manifest["config"].update({k: v for k, v in changes.items() if v is not None})
        create_type(self.manifest["index_type"]).tune(self.index, self.config)

    def add(self, feats: np.ndarray, meta: pd.DataFrame) -> None:
        """Append vectors without retraining PCA or cells (fine while the data look alike)."""
        _check_feats(feats, len(meta), self.manifest["input_dim"])
        self.index.add(np.ascontiguousarray(feats, np.float32))
        self.meta = pd.concat([self.meta, _with_ids(meta, len(self.meta))], ignore_index=True)
        self.manifest["count"] = int(self.index.ntotal)

    def search(self, feats: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances (Euclidean between unit vectors, ascending) and ids of the k nearest; id -1
        (distance inf) where the index holds fewer than k vectors."""
        _check_feats(feats, len(feats), self.manifest["input_dim"])
        D, I = self.index.search(np.ascontiguousarray(feats, np.float32), k)
        D = np.sqrt(np.maximum(D, 0))
        D[I < 0] = np.inf
        return D, I

    @property
    def base(self) -> faiss.Index:
        """The searching index after the PCA / L2norm chain."""
        inner = self.index.index if isinstance(self.index, faiss.IndexPreTransform) else self.index
        return faiss.downcast_index(inner)

    def transform(self, feats: np.ndarray) -> np.ndarray:
        """Vectors as the index stores them: after PCA and L2 normalisation, (N, pca_dim)."""
        x = np.ascontiguousarray(feats, np.float32)
        if not isinstance(self.index, faiss.IndexPreTransform):
            return x
        d = self.base.d
        out = self.index.apply_chain(len(x), faiss.swig_ptr(x))
        return faiss.rev_swig_ptr(out, len(x) * d).reshape(len(x), d).copy()

    def save(self, folder: str | Path) -> None:
        """Write the three files to a new sibling folder, then swap it in: a crash leaves either the
        old index or the new one, never a mix."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            write_csv(tmp / "metadata.csv", self.meta[META_COLUMNS])
            write_json(tmp / "manifest.json", self.manifest)
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            if folder.exists():
                folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = False) -> "EmbeddingIndex":
        """Read a saved index and check that its parts agree. `mmap` maps IVF lists from disk
        read-only (no `add` then); other types are read into memory."""
        folder = Path(folder)
        missing = [f for f in FILES if not (folder / f).is_file()]
        if missing:
            raise InputError(f"{folder} is not an index folder (missing {', '.join(missing)})")
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            meta = pd.read_csv(folder / "metadata.csv", dtype={"label": str, "path": str, "hash": str},
                               keep_default_na=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read index {folder}: {first_line(e)}") from None
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap and manifest.get("index_type") == "ivf" else 0
        try:
            index = faiss.read_index(str(folder / "index.faiss"), flags)
        except RuntimeError as e:
            raise InputError(f"cannot read {folder / 'index.faiss'}: {first_line(e)}") from None
        _check_consistent(folder, manifest, index, meta)
        out = cls(index, manifest, meta)
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


def _check_consistent(folder: Path, manifest: dict, index: faiss.Index, meta: pd.DataFrame) -> None:
    problems = []
    if manifest.get("format") != FORMAT:
        problems.append(f"format {manifest.get('format')!r} is not {FORMAT}")
    if manifest.get("count") != index.ntotal:
        problems.append(f"manifest count {manifest.get('count')} but index holds {index.ntotal}")
    if manifest.get("input_dim") != index.d:
        problems.append(f"manifest input_dim {manifest.get('input_dim')} but index takes {index.d}")
    if len(meta) != index.ntotal or list(meta.get("id", [])) != list(range(len(meta))):
        problems.append(f"metadata.csv has {len(meta)} rows (ids 0..N-1 expected) for {index.ntotal} vectors")
    if problems:
        raise InputError(f"index {folder} does not match its manifest: {'; '.join(problems)}")
