"""What the `autolabel index` commands do, as library functions: images in, tables out."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from classification.data import ImageSet, find_images, load_files, load_labeled, load_unlabeled
from classification.errors import InputError
from classification.images import is_image_path
from embeddings.config import IndexConfig
from embeddings.exact import knn_blocks
from embeddings.features import Embedder
from embeddings.index import EmbeddingIndex
from embeddings.recall import drop_self, one_recall_at_k, recall_at_k
from embeddings.stream import BLOCK_ROWS, block_reader

_logger = logging.getLogger(__name__)


def load_images(source: str | Path) -> ImageSet:
    """Images from a folder or CSV, labelled where the source says so: a folder of class folders
    (no loose images) or a CSV with a label column. Anything else is read unlabelled."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"images not found: {source}")
    if source.is_dir():
        loose = any(p.is_file() and is_image_path(p) for p in source.iterdir())
        subdirs = [d for d in source.iterdir() if d.is_dir() and not d.name.startswith(".")]
        labelled = not loose and len(subdirs) >= 2 and any(find_images(d) for d in subdirs)
    else:
        try:
            header = pd.read_csv(source, nrows=0).columns
        except (OSError, ValueError, UnicodeDecodeError):
            header = []
        labelled = any(str(c).strip().lower() in ("label", "class", "tag") for c in header)
    return load_labeled(source) if labelled else load_unlabeled(source)


def load_queries(paths: list[str | Path]) -> ImageSet:
    """Query images named one by one or by folder (as on a command line), as one unlabelled set."""
    paths = [Path(p) for p in paths]
    out = load_files([p for p in paths if not p.is_dir()])
    for folder in (p for p in paths if p.is_dir()):
        out = out.concat(load_unlabeled(folder))
    if len(out) == 0:
        raise InputError("no query images found")
    return out


def metadata(images: ImageSet, ok: np.ndarray | None = None) -> pd.DataFrame:
    """path, label (class name or empty), hash of each image, only the decodable ones with `ok`."""
    names = np.array([images.classes[i] if i >= 0 else "" for i in images.labels], dtype=object)
    frame = pd.DataFrame({"path": images.paths, "label": names, "hash": images.hashes})
    return frame if ok is None else frame[ok].reset_index(drop=True)


def build_index(images: ImageSet, embedder: Embedder, cfg: IndexConfig = IndexConfig()):
    """Embed `images` and index them. Returns the index and the skipped files."""
    emb = embedder(images)
    index = EmbeddingIndex.build(emb.feats[emb.ok], metadata(images, emb.ok), cfg, embedder.provenance())
    return index, emb.skipped + images.skipped


def add_images(index: EmbeddingIndex, images: ImageSet, embedder: Embedder):
    """Embed and append `images`, skipping content already in the index. Returns (added, skipped)."""
    check_provenance(index, embedder)
    new = ~np.isin(np.asarray(images.hashes), index.meta["hash"].to_numpy())
    if (~new).any():
        _logger.info("%d image(s) already in the index were left out", int((~new).sum()))
    images = images.subset(np.flatnonzero(new))
    if len(images) == 0:
        return 0, []
    emb = embedder(images)
    index.add(emb.feats[emb.ok], metadata(images, emb.ok))
    return int(emb.ok.sum()), emb.skipped


def check_provenance(index: EmbeddingIndex, embedder: Embedder) -> None:
    """Refuse vectors from another model, weights, transform or size than the index's."""
    mine = embedder.provenance()
    differ = [k for k, v in mine.items() if index.manifest.get(k) != v]
    if differ:
        raise InputError("the index was built with a different " + ", ".join(
            f"{k} ({index.manifest.get(k)} vs {mine[k]})" for k in differ)
            + "; pass the same --model/--img-size, or rebuild the index")


def query_images(index: EmbeddingIndex, images: ImageSet, embedder: Embedder, k: int = 5) -> pd.DataFrame:
    """One row per (query, rank): query, rank, id, path, label, distance."""
    check_provenance(index, embedder)
    emb = embedder(images)
    # more neighbours than the index holds would only allocate rows of -1 (a huge -k: gigabytes)
    D, I = index.search(emb.feats[emb.ok], k if k < 1 else min(k, max(len(index.meta), 1)))
    queries = np.asarray(images.paths, dtype=object)[emb.ok]
    rows = []
    for q, (d_row, i_row) in enumerate(zip(D, I)):
        for rank, (d, i) in enumerate(zip(d_row, i_row), start=1):
            if i >= 0:
                hit = index.meta.iloc[i]
                rows.append({"query": queries[q], "rank": rank, "id": int(i), "path": hit["path"],
                             "label": hit["label"], "distance": float(d)})
    return pd.DataFrame(rows, columns=["query", "rank", "id", "path", "label", "distance"])


def recall_report(index: EmbeddingIndex, queries: ImageSet, embedder: Embedder,
                  ks: tuple[int, ...] = (1, 3, 5, 10)) -> dict:
    """Label recall@k of labelled queries (an image never counts as its own neighbour) and, for an
    approximate index, 1-recall@k against exact search over the same vectors (for ivfpq, only where
    it keeps them)."""
    check_provenance(index, embedder)
    if not (queries.labels >= 0).any():
        raise InputError("recall needs labelled queries: a folder per class or a CSV with a label column")
    emb = embedder(queries)
    keep = emb.ok & (queries.labels >= 0)
    x, q_hash = emb.feats[keep], np.asarray(queries.hashes)[keep]
    q_labels = np.asarray(queries.classes, dtype=object)[queries.labels[keep]]
    k_max, spare = max(ks), 1
    db_hash, db_labels = index.meta["hash"].to_numpy(), index.meta["label"].to_numpy(dtype=object)
    _, I = drop_self(*index.search(x, k_max + spare), q_hash, db_hash, k_max)
    report = {"queries": int(keep.sum()), "index_size": int(index.index.ntotal),
              "recall": {k: recall_at_k(I, q_labels, db_labels, k) for k in ks}}
    kind = index.manifest["index_type"]
    if kind != "flat" and (kind != "ivfpq" or index.vectors is not None):
        exact = exact_search(index, x, k_max + spare)
        _, I_exact = drop_self(*exact, q_hash, db_hash, k_max)
        report["one_recall"] = {k: one_recall_at_k(I, I_exact, k) for k in ks}
    return report


def exact_search(index: EmbeddingIndex, x: np.ndarray, k: int):
    """Exact neighbours in the index's own (PCA) space, the ground truth for 1-recall@k: brute force,
    block by block, over the float32 vectors the index keeps for re-ranking where it keeps them;
    otherwise IVF visits every list and flat / HNSW storage is searched by brute force. ivfpq codes
    are approximations, so its ground truth needs the kept vectors."""
    if index.vectors is not None:
        return knn_blocks(index.transform(x), block_reader(index.vectors)(), k)
    kind = index.manifest["index_type"]
    if kind == "ivfpq":
        raise InputError("exact search over an ivfpq index needs its exact vectors: build it with --rerank N")
    if kind == "ivf":
        nprobe = index.config.nprobe
        index.tune(nprobe=2**31 - 1)  # faiss caps it at nlist
        try:
            return index.search(x, k, rerank=0)
        finally:
            index.tune(nprobe=nprobe)
    base = index.base
    blocks = (base.reconstruct_n(s, min(BLOCK_ROWS, base.ntotal - s)) for s in range(0, base.ntotal, BLOCK_ROWS))
    return knn_blocks(index.transform(x), blocks, k)
