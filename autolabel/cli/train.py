"""`autolabel train` and `autolabel predict`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autolabel.cli.common import open_cache, print_skips, progress_enabled, tracking_for, weights_choice
from autolabel.cli.options import (CACHE_DIR, DATA_CLEAN, EXPERIMENT, HEAD, IMG_SIZE, LOSS, MODEL, PRETRAINED, SEED,
                                   TRACKING_URI, WEIGHTS, WORKERS, mlflow_switch)
from autolabel.supervised import predict_to_csv, train_folds, train_supervised
from autolabel.tracking_tools import track_folds
from classification.config import TrainConfig


def train(
    ctx: typer.Context,
    data_clean: Path = DATA_CLEAN,
    out: Path = typer.Option(..., "--out", help="Checkpoint folder to write."),
    mode: str = typer.Option("auto", help="head (frozen backbone, cached features) | finetune | auto."),
    model: str = MODEL,
    weights: Optional[Path] = WEIGHTS,
    pretrained: Optional[bool] = PRETRAINED,
    epochs: Optional[int] = typer.Option(None, help="Head-mode epochs (finetune: stage-2 epochs)."),
    img_size: Optional[int] = IMG_SIZE,
    head: str = HEAD,
    loss: str = LOSS,
    lr: float = typer.Option(3e-3, help="Head learning rate."),
    val_fraction: float = typer.Option(0.2, help="Share of labels per class held out for validation."),
    test: Optional[Path] = typer.Option(None, help="Labelled test images to score the result on."),
    seed: int = SEED,
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    workers: Optional[int] = WORKERS,
    cache_dir: Optional[Path] = CACHE_DIR,
    folds: Optional[int] = typer.Option(None, "--folds", help="Cross-validate instead: K stratified folds, each "
                                        "scored by a model trained on the others; writes folds.json, no checkpoint."),
    mlflow: Optional[bool] = mlflow_switch("With --folds: track the cross-validation in MLflow"),
    tracking_uri: Optional[str] = TRACKING_URI,
    experiment: Optional[str] = EXPERIMENT,
):
    """Train a classifier on human labels and write a checkpoint folder (or cross-validate with --folds)."""
    changes = {"stage2_epochs" if mode == "finetune" else "epochs": epochs} if epochs is not None else {}
    cfg = TrainConfig(model=model, weights=weights_choice(weights, pretrained), mode=mode, head=head,
                      loss=loss, lr=lr, img_size=img_size, val_fraction=val_fraction, seed=seed,
                      device=device, workers=workers, **changes)
    if folds is not None:
        tracking = tracking_for(ctx, mlflow, tracking_uri, experiment)
        return _cross_validate(cfg, data_clean, test, out, open_cache(cache_dir), folds, tracking)
    metrics = train_supervised(data_clean, out, cfg, open_cache(cache_dir), test=test,
                               progress=progress_enabled())
    _print_trained(metrics)
    typer.echo(f"checkpoint: {out}")


def _cross_validate(cfg: TrainConfig, data_clean: Path, test: Optional[Path], out: Path, cache, folds: int,
                    tracking: Optional[dict]) -> dict:
    """`train --folds`: cross-validate, print each fold and the mean, track the run."""
    summary = train_folds(data_clean, out, cfg, cache, folds, test=test, progress=progress_enabled())
    _print_folds(summary)
    typer.echo(f"folds: {out / 'folds.json'}")
    sources = {"data_clean": str(data_clean), "test": str(test) if test else None}
    where = track_folds(summary, cfg.to_dict(), out, sources, tracking)
    if where:
        typer.echo(where)
    return summary


def _print_trained(metrics: dict) -> None:
    best = metrics["best_epoch"]
    typer.echo(f"trained {metrics['mode']} mode on {metrics['n_train']} images "
               f"(validation {metrics['n_val']}); best epoch {best.get('epoch')} "
               f"val macro-F1 {best.get('val_macro_f1', float('nan')):.3f}")
    if "test" in metrics:
        typer.echo(f"test accuracy {metrics['test']['accuracy']:.3f}, macro-F1 {metrics['test']['macro_f1']:.3f}")
    print_skips(typer.echo, [(s["path"], s["reason"]) for s in metrics["skipped"]])


def _print_folds(summary: dict) -> None:
    for f in summary["folds"]:
        typer.echo(f"fold {f['fold']}: accuracy {f['accuracy']:.3f}, macro-F1 {f['macro_f1']:.3f} "
                   f"on {f['n_held_out']} held-out images (trained on {f['n_train']}, validated on {f['n_val']})")
    for label, key in (("held-out", "mean_std"), ("test", "test_mean_std")):
        if summary.get(key):
            s = summary[key]
            typer.echo(f"{label} over {summary['n_folds']} folds: accuracy {s['accuracy']['mean']:.3f} "
                       f"± {s['accuracy']['std']:.3f}, macro-F1 {s['macro_f1']['mean']:.3f} "
                       f"± {s['macro_f1']['std']:.3f}")


def predict(
    checkpoint: Path = typer.Option(..., help="A folder written by `autolabel train`."),
    images: Path = typer.Option(..., help="Images to label: a folder (any depth) or a CSV with a path column."),
    out: Path = typer.Option(..., "--out", help="CSV to write: path,label,confidence,prob_<class>."),
    views: int = typer.Option(1, help="Average the probabilities of this many weak views (1: eval view)."),
    batch_size: int = typer.Option(64),
    workers: Optional[int] = WORKERS,
    cache_dir: Optional[Path] = CACHE_DIR,
):
    """Label images with a trained checkpoint."""
    frame, skipped = predict_to_csv(checkpoint, images, out, open_cache(cache_dir), n_views=views,
                                    batch_size=batch_size, workers=workers, progress=progress_enabled())
    typer.echo(f"predicted {len(frame)} images -> {out}")
    print_skips(typer.echo, skipped)
