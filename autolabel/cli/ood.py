"""`autolabel ood score`: which images belong to none of the labelled classes."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autolabel.cli.common import open_embedder, print_skips
from autolabel.cli.options import BACKBONE, CACHE_DIR, IMG_SIZE, WORKERS
from classification.data import load_labeled
from classification.fileio import write_csv
from embeddings.api import load_images
from embeddings.ood import load_ood_truth, ood_metrics, score_ood

app = typer.Typer(help="Out-of-class scores: distance to the k-th nearest labelled image.", no_args_is_help=True)


@app.command("score")
def score(
    labeled: Path = typer.Option(..., "--labeled", "--data-clean", help="Labelled images: a folder per class or a path,label CSV."),
    images: Path = typer.Option(..., "--images", help="Images to score: a folder or a CSV with a path column."),
    k: int = typer.Option(5, "-k", "--k", help="Which neighbour's distance is the score."),
    tpr: float = typer.Option(0.95, "--tpr", help="Share of labelled images the threshold keeps."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="path,ood CSV (1 = out of class): adds AUROC and FPR@TPR."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV to write: path,score,refused."),
    model: str = BACKBONE,
    img_size: Optional[int] = IMG_SIZE,
    cache_dir: Optional[Path] = CACHE_DIR, workers: Optional[int] = WORKERS,
):
    """Score images by their distance to the labelled ones; refuse those above the calibrated
    threshold (leave-one-out on the labelled images keeps --tpr of them)."""
    embedder = open_embedder(model, img_size, cache_dir, workers)
    frame, detector, skipped = score_ood(load_labeled(labeled), load_images(images), embedder, k, tpr)
    if out is not None:
        write_csv(out, frame)
    else:
        for row in frame.itertuples():
            typer.echo(f"{row.score:.4f}  {'refused' if row.refused else 'kept   '}  {row.path}")
    typer.echo(f"threshold {detector.threshold_:.4f} (k={detector.k_}, keeps {tpr:.0%} of labelled images); "
               f"refused {int(frame['refused'].sum())} of {len(frame)}" + (f" -> {out}" if out else ""))
    if truth is not None:
        _print_truth(ood_metrics(frame, load_ood_truth(truth), tpr), tpr)
    print_skips(typer.echo, skipped)


def _print_truth(m: dict, tpr: float) -> None:
    typer.echo(f"with truth ({m['n_in']} in-class, {m['n_ood']} out-of-class): AUROC {m['auroc']:.3f}, "
               f"FPR@{tpr:.0%}TPR {m['fpr_at_tpr']:.3f}, refused {m['refused_ood']:.1%} of out-of-class "
               f"and {m['refused_in']:.1%} of in-class")
