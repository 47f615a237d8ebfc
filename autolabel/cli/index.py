"""`autolabel index build|query|recall|add|export-projector`: the PCA + FAISS embedding index.

For collections too large for float32 in RAM: `--type ivfpq` stores compressed codes, `--rerank N`
keeps the float32 vectors on disk (vectors.npy) and re-ranks N * k candidates by exact distance,
`--shards S` saves the index over S files searched as one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd
import typer

from autolabel.cli.common import open_embedder, print_skips
from autolabel.cli.options import BACKBONE, CACHE_DIR, IMG_SIZE, THREADS, WORKERS, int_list
from classification.errors import InputError
from classification.locks import exclusive, index_lock
from embeddings.api import add_images, build_index, load_images, load_queries, query_images, recall_report
from embeddings.config import IndexConfig
from embeddings.index import EmbeddingIndex, set_threads
from embeddings.projector import export_projector

app = typer.Typer(help="Embedding index: PCA + FAISS, nearest neighbours, recall@k.", no_args_is_help=True)

INDEX_DIR = typer.Argument(..., help="Index folder.")
NPROBE = typer.Option(None, "--nprobe", help="ivf, ivfpq: lists visited per query.")
RERANK = typer.Option(None, "--rerank", help="Re-rank N * k candidates by exact distance (vectors.npy); 0 = off "
                      "(default: as built).")


def embedder_for(manifest: dict, cache_dir, workers):
    """The embedder an index was built with (its model and input size)."""
    if not isinstance(manifest.get("model"), str) or not isinstance(manifest.get("img_size"), int):
        raise InputError("the index's manifest.json names no model and input size (an index built from "
                         "arrays, or a damaged manifest): query it with vectors from Python, or rebuild it "
                         "with `autolabel index build`")
    return open_embedder(manifest["model"], manifest["img_size"], cache_dir, workers)


def open_index(index_dir: Path, threads: int, nprobe: Optional[int], rerank: Optional[int]) -> EmbeddingIndex:
    """An index to search (memory-mapped) with `threads` FAISS threads, its search settings
    overridden where given."""
    set_threads(threads)
    index = EmbeddingIndex.load(index_dir, mmap=True)
    index.tune(nprobe=nprobe, rerank=rerank)
    return index


@app.command("build")
def build(
    images: Path = typer.Option(..., "--images", help="A folder (a folder per class gives labels) or a CSV with path[,label]."),
    out: Path = typer.Option(..., "--out", help="Index folder to write."),
    pca: int = typer.Option(128, "--pca", help="PCA dimension (0 = none); vectors are L2-normalised after it."),
    index_type: str = typer.Option("flat", "--type", help="flat (exact) | ivf | hnsw | ivfpq (compressed codes)."),
    nlist: int = typer.Option(0, "--nlist", help="ivf, ivfpq: lists (default: about 4 sqrt(N))."),
    nprobe: int = typer.Option(16, "--nprobe", help="ivf, ivfpq: lists visited per query."),
    pq_m: int = typer.Option(0, "--pq-m", help="ivfpq: code bytes per vector, a divisor of the dimension (default: d/8)."),
    rerank: int = typer.Option(0, "--rerank", help="Keep the float32 vectors on disk (vectors.npy) and re-rank "
                               "N * k candidates by exact distance at query time; 0 = off."),
    shards: int = typer.Option(1, "--shards", help="Save the index over this many files (flat, ivf, ivfpq)."),
    model: str = BACKBONE,
    img_size: Optional[int] = IMG_SIZE,
    force: bool = typer.Option(False, "--force", help="Replace an existing index folder."),
    cache_dir: Optional[Path] = CACHE_DIR, threads: int = THREADS, workers: Optional[int] = WORKERS,
):
    """Embed images and build a PCA + FAISS index folder."""
    if (out / "manifest.json").exists() and not force:
        raise InputError(f"{out} already holds an index; use `autolabel index add` or --force")
    cfg = IndexConfig(type=index_type, pca=pca, nlist=nlist, nprobe=nprobe, pq_m=pq_m, rerank=rerank, threads=threads)
    if shards < 1:
        raise InputError(f"--shards must be >= 1, got {shards}")
    set_threads(threads)
    with exclusive(index_lock(out), f"index folder {out}"):
        if (out / "manifest.json").exists() and not force:  # again, now that no one else writes it
            raise InputError(f"{out} already holds an index; use `autolabel index add` or --force")
        index, skipped = build_index(load_images(images), open_embedder(model, img_size, cache_dir, workers), cfg)
        index.save(out, shards=shards)
    typer.echo(f"indexed {_describe(index.manifest, shards)} -> {out}")
    print_skips(typer.echo, skipped)


def _describe(m: dict, shards: int) -> str:
    """"N images (factory, d -> d' dims, PCA explained variance, shards)" for the build's last line."""
    ratio = m["explained_variance_ratio"]
    return (f"{m['count']} images ({m['factory']}, {m['input_dim']} -> {m['pca_dim'] or m['input_dim']} dims"
            + (f", PCA explained variance {ratio:.1%}" if ratio is not None else "")
            + (f", {shards} shards" if shards > 1 else "") + ")")


@app.command("add")
def add(
    index_dir: Path = INDEX_DIR,
    images: Path = typer.Option(..., "--images", help="A folder or CSV of images to add."),
    cache_dir: Optional[Path] = CACHE_DIR, threads: int = THREADS, workers: Optional[int] = WORKERS,
):
    """Add images to an index without retraining it (content already indexed is left out)."""
    set_threads(threads)
    with exclusive(index_lock(index_dir), f"index folder {index_dir}"):  # load, add, save: one writer
        index = EmbeddingIndex.load(index_dir)
        added, skipped = add_images(index, load_images(images), embedder_for(index.manifest, cache_dir, workers))
        index.save(index_dir)
    typer.echo(f"added {added} images; the index holds {index.manifest['count']}")
    print_skips(typer.echo, skipped)


@app.command("query")
def query(
    index_dir: Path = INDEX_DIR,
    images: list[Path] = typer.Argument(..., help="Query images (files or folders)."),
    k: int = typer.Option(5, "-k", "--k", help="Neighbours per query."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    nprobe: Optional[int] = NPROBE,
    rerank: Optional[int] = RERANK,
    cache_dir: Optional[Path] = CACHE_DIR, threads: int = THREADS, workers: Optional[int] = WORKERS,
):
    """Print the k nearest indexed images of each query: path, label, distance."""
    index = open_index(index_dir, threads, nprobe, rerank)
    queries = load_queries(images)
    frame = query_images(index, queries, embedder_for(index.manifest, cache_dir, workers), k)
    if as_json:
        typer.echo(json.dumps(_grouped(frame), indent=2))
        return
    for q, group in frame.groupby("query", sort=False):
        typer.echo(q)
        for row in group.itertuples():
            typer.echo(f"  {row.rank:>3}  {row.distance:.4f}  {row.label or '-':<15} {row.path}")
    print_skips(typer.echo, queries.skipped)


def _grouped(frame: pd.DataFrame) -> list[dict]:
    return [{"query": q, "neighbours": g.drop(columns="query").to_dict("records")}
            for q, g in frame.groupby("query", sort=False)]


@app.command("recall")
def recall(
    index_dir: Path = INDEX_DIR,
    queries: Path = typer.Option(..., "--queries", help="Labelled queries: a folder per class or a path,label CSV."),
    ks: str = typer.Option("1,3,5,10", "--k", help="Comma-separated k values."),
    nprobe: Optional[int] = NPROBE,
    rerank: Optional[int] = RERANK,
    cache_dir: Optional[Path] = CACHE_DIR, threads: int = THREADS, workers: Optional[int] = WORKERS,
):
    """Label recall@k (a neighbour with the query's label in the top k) and, for ivf/hnsw (ivfpq
    with --rerank), 1-recall@k against exact search."""
    k_values = tuple(sorted(set(int_list(ks, "--k"))))
    if not k_values or k_values[0] < 1:
        raise InputError(f"--k values must be >= 1, got {ks!r}")
    index = open_index(index_dir, threads, nprobe, rerank)
    report = recall_report(index, load_images(queries), embedder_for(index.manifest, cache_dir, workers), k_values)
    typer.echo(f"{report['queries']} queries against {report['index_size']} indexed images")
    typer.echo("k      " + "  ".join(f"{k:>6}" for k in k_values))
    typer.echo("recall " + "  ".join(f"{report['recall'][k]:>6.3f}" for k in k_values))
    if "one_recall" in report:
        typer.echo("1-R@k  " + "  ".join(f"{report['one_recall'][k]:>6.3f}" for k in k_values))


@app.command("export-projector")
def projector(
    index_dir: Path = INDEX_DIR,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write (default: INDEX/projector)."),
):
    """Write TensorBoard projector TSVs and a 2-D scatter PNG coloured by label."""
    index = EmbeddingIndex.load(index_dir)
    info = export_projector(index, out or index_dir / "projector")
    typer.echo(f"exported {info['points']} vectors ({info['dim']} dims) -> {info['folder']}")
