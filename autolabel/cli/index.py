"""`autolabel index build|query|recall|add|export-projector`: the PCA + FAISS embedding index.

For collections too large for float32 in RAM: `--type ivfpq` stores compressed codes, `--rerank N`
keeps the float32 vectors on disk (vectors.npy) and re-ranks N * k candidates by exact distance,
`--shards S` saves the index over S files searched as one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from autolabel.cli.common import open_cache, print_skips, progress_enabled
from classification.config import DEFAULT_MODEL
from classification.data import ImageSet, load_files, load_unlabeled
from classification.errors import InputError
from embeddings.api import add_images, build_index, load_images, query_images, recall_report
from embeddings.config import IndexConfig
from embeddings.features import Embedder
from embeddings.index import EmbeddingIndex, set_threads
from embeddings.projector import export_projector

app = typer.Typer(help="Embedding index: PCA + FAISS, nearest neighbours, recall@k.", no_args_is_help=True)

CACHE = typer.Option(None, "--cache-dir", help="Feature cache folder (default: ~/.cache/autolabel).")
THREADS = typer.Option(0, "--threads", help="FAISS threads (default: all cores).")
WORKERS = typer.Option(None, "--workers", help="Decoding workers (default: cores - 1).")
RERANK = typer.Option(None, "--rerank", help="Re-rank N * k candidates by exact distance (vectors.npy); 0 = off "
                      "(default: as built).")


def embedder_for(manifest: dict, cache_dir, workers) -> Embedder:
    """The embedder an index was built with (its model and input size)."""
    return Embedder(manifest["model"], img_size=manifest["img_size"], cache=open_cache(cache_dir),
                    workers=workers, progress=progress_enabled())


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
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="timm backbone for the embeddings."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Input size (default: the model's)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing index folder."),
    cache_dir: Optional[Path] = CACHE, threads: int = THREADS, workers: Optional[int] = WORKERS,
):
    """Embed images and build a PCA + FAISS index folder."""
    if (out / "manifest.json").exists() and not force:
        raise InputError(f"{out} already holds an index; use `autolabel index add` or --force")
    cfg = IndexConfig(type=index_type, pca=pca, nlist=nlist, nprobe=nprobe, pq_m=pq_m, rerank=rerank, threads=threads)
    if shards < 1:
        raise InputError(f"--shards must be >= 1, got {shards}")
    set_threads(threads)
    embedder = Embedder(model, img_size=img_size, cache=open_cache(cache_dir), workers=workers,
                        progress=progress_enabled())
    index, skipped = build_index(load_images(images), embedder, cfg)
    index.save(out, shards=shards)
    m = index.manifest
    ratio = m["explained_variance_ratio"]
    typer.echo(f"indexed {m['count']} images ({m['factory']}, {m['input_dim']} -> {m['pca_dim'] or m['input_dim']} dims"
               + (f", PCA explained variance {ratio:.1%}" if ratio is not None else "")
               + (f", {shards} shards" if shards > 1 else "") + f") -> {out}")
    print_skips(typer.echo, skipped)


@app.command("add")
def add(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    images: Path = typer.Option(..., "--images", help="A folder or CSV of images to add."),
    cache_dir: Optional[Path] = CACHE, threads: int = THREADS, workers: Optional[int] = WORKERS,
):
    """Add images to an index without retraining it (content already indexed is left out)."""
    set_threads(threads)
    index = EmbeddingIndex.load(index_dir)
    added, skipped = add_images(index, load_images(images), embedder_for(index.manifest, cache_dir, workers))
    index.save(index_dir)
    typer.echo(f"added {added} images; the index holds {index.manifest['count']}")
    print_skips(typer.echo, skipped)


@app.command("query")
def query(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    images: list[Path] = typer.Argument(..., help="Query images (files or folders)."),
    k: int = typer.Option(5, "-k", "--k", help="Neighbours per query."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="ivf, ivfpq: lists visited per query."),
    rerank: Optional[int] = RERANK,
    cache_dir: Optional[Path] = CACHE, threads: int = THREADS, workers: Optional[int] = WORKERS,
):
    """Print the k nearest indexed images of each query: path, label, distance."""
    set_threads(threads)
    index = EmbeddingIndex.load(index_dir, mmap=True)
    index.tune(nprobe=nprobe, rerank=rerank)
    queries = _query_set(images)
    frame = query_images(index, queries, embedder_for(index.manifest, cache_dir, workers), k)
    if as_json:
        grouped = [{"query": q, "neighbours": g.drop(columns="query").to_dict("records")}
                   for q, g in frame.groupby("query", sort=False)]
        typer.echo(json.dumps(grouped, indent=2))
        return
    for q, group in frame.groupby("query", sort=False):
        typer.echo(q)
        for row in group.itertuples():
            typer.echo(f"  {row.rank:>3}  {row.distance:.4f}  {row.label or '-':<15} {row.path}")
    print_skips(typer.echo, queries.skipped)


@app.command("recall")
def recall(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    queries: Path = typer.Option(..., "--queries", help="Labelled queries: a folder per class or a path,label CSV."),
    ks: str = typer.Option("1,3,5,10", "--k", help="Comma-separated k values."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="ivf, ivfpq: lists visited per query."),
    rerank: Optional[int] = RERANK,
    cache_dir: Optional[Path] = CACHE, threads: int = THREADS, workers: Optional[int] = WORKERS,
):
    """Label recall@k (a neighbour with the query's label in the top k) and, for ivf/hnsw (ivfpq
    with --rerank), 1-recall@k against exact search."""
    try:
        k_values = tuple(sorted({int(v) for v in ks.split(",") if v.strip()}))
    except ValueError:
        raise InputError(f"--k must be comma-separated integers, got {ks!r}") from None
    if not k_values or k_values[0] < 1:
        raise InputError(f"--k values must be >= 1, got {ks!r}")
    set_threads(threads)
    index = EmbeddingIndex.load(index_dir, mmap=True)
    index.tune(nprobe=nprobe, rerank=rerank)
    report = recall_report(index, load_images(queries), embedder_for(index.manifest, cache_dir, workers), k_values)
    typer.echo(f"{report['queries']} queries against {report['index_size']} indexed images")
    typer.echo("k      " + "  ".join(f"{k:>6}" for k in k_values))
    typer.echo("recall " + "  ".join(f"{report['recall'][k]:>6.3f}" for k in k_values))
    if "one_recall" in report:
        typer.echo("1-R@k  " + "  ".join(f"{report['one_recall'][k]:>6.3f}" for k in k_values))


@app.command("export-projector")
def projector(
    index_dir: Path = typer.Argument(..., help="Index folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write (default: INDEX/projector)."),
):
    """Write TensorBoard projector TSVs and a 2-D scatter PNG coloured by label."""
    index = EmbeddingIndex.load(index_dir)
    info = export_projector(index, out or index_dir / "projector")
    typer.echo(f"exported {info['points']} vectors ({info['dim']} dims) -> {info['folder']}")


def _query_set(paths: list[Path]) -> ImageSet:
    """Files and folders given on the command line, as one unlabelled image set."""
    out = load_files([p for p in paths if not p.is_dir()])
    for folder in (p for p in paths if p.is_dir()):
        out = out.concat(load_unlabeled(folder))
    if len(out) == 0:
        raise InputError("no query images found")
    return out
