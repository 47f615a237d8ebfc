"""Export an index for looking at: TensorBoard projector TSVs and a 2-D scatter PNG by label."""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from classification.fileio import atomic_path, write_csv, write_figure, write_text
from embeddings.index import EmbeddingIndex

MAX_POINTS = 100_000  # the projector itself struggles beyond this; a seeded sample is exported


def stored_vectors(index: EmbeddingIndex) -> np.ndarray:
    """The vectors as the index holds them (after PCA and normalisation), (N, d)."""
    base = index.base
    if isinstance(base, faiss.IndexIVF):
        base.make_direct_map()
    return base.reconstruct_n(0, base.ntotal)


def export_projector(index: EmbeddingIndex, out: str | Path, seed: int = 0) -> dict:
    """Write vectors.tsv, metadata.tsv (id, label, path), projector_config.pbtxt and scatter.png."""
    out = Path(out)
    vectors, meta = stored_vectors(index), index.meta
    if len(meta) > MAX_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(meta), MAX_POINTS, replace=False))
        vectors, meta = vectors[keep], meta.iloc[keep]
    with atomic_path(out / "vectors.tsv") as tmp:
        np.savetxt(tmp, vectors, delimiter="\t", fmt="%.5f")
    labels = meta["label"].replace("", "(none)")
    write_csv(out / "metadata.tsv", meta.assign(label=labels)[["id", "label", "path"]], sep="\t")
    write_text(out / "projector_config.pbtxt",
               'embeddings {\n  tensor_path: "vectors.tsv"\n  metadata_path: "metadata.tsv"\n}\n')
    scatter_png(vectors, labels.to_numpy(), out / "scatter.png")
    return {"points": len(meta), "dim": int(vectors.shape[1]), "folder": str(out)}


def scatter_png(vectors: np.ndarray, labels: np.ndarray, path: str | Path) -> None:
    """First two principal components, one colour per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred[:20_000], full_matrices=False)
    xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(7, 6))
    names = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for i, name in enumerate(names):
        m = labels == name
        ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.7, color=cmap(i % cmap.N), label=name)
    if len(names) <= 20:
        ax.legend(markerscale=3, fontsize=8, loc="best")
    ax.set_title(f"{len(vectors)} embeddings, first two principal components")
    write_figure(path, fig)
