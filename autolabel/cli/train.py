"""`autolabel train` and `autolabel predict`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autolabel.cli.common import open_cache, print_skips, progress_enabled, weights_choice
from autolabel.supervised import predict_to_csv, train_folds, train_supervised
from autolabel.tracking_tools import track_folds, tracking_choice
from classification.config import DEFAULT_MODEL, TrainConfig


def train(
    ctx: typer.Context,
    data_clean: Path = typer.Option(..., "--data-clean", help="Labelled images: a folder per class or a path,label CSV."),
    out: Path = typer.Option(..., "--out", help="Checkpoint folder to write."),
    mode: str = typer.Option("auto", help="head (frozen backbone, cached features) | finetune | auto."),
    model: str = typer.Option(DEFAULT_MODEL, help="Any timm model name."),
    weights: Optional[Path] = typer.Option(None, help="Backbone state-dict file."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained",
                                              help="Download timm hub weights / start from random weights."),
    epochs: Optional[int] = typer.Option(None, help="Head-mode epochs (finetune: stage-2 epochs)."),
    img_size: Optional[int] = typer.Option(None, help="Input size; default: the model's."),
    head: str = typer.Option("linear", help="linear | mlp."),
    loss: str = typer.Option("ce", help="ce | bce | focal."),
    lr: float = typer.Option(3e-3, help="Head learning rate."),
    val_fraction: float = typer.Option(0.2, help="Share of labels per class held out for validation."),
    test: Optional[Path] = typer.Option(None, help="Labelled test images to score the result on."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    workers: Optional[int] = typer.Option(None, help="Decoding workers (default: cores - 1)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache folder (default: ~/.cache/autolabel)."),
    folds: Optional[int] = typer.Option(None, "--folds", help="Cross-validate instead: K stratified folds, each "
                                        "scored by a model trained on the others; writes folds.json, no checkpoint."),
    mlflow: Optional[bool] = typer.Option(None, "--mlflow/--no-mlflow", help="With --folds: track the "
                                          "cross-validation in MLflow (default: on)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow server or store."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment (default: autolabel)."),
):
    """Train a classifier on human labels and write a checkpoint folder (or cross-validate with --folds)."""
    changes = {"stage2_epochs" if mode == "finetune" else "epochs": epochs} if epochs is not None else {}
    cfg = TrainConfig(model=model, weights=weights_choice(weights, pretrained), mode=mode, head=head,
                      loss=loss, lr=lr, img_size=img_size, val_fraction=val_fraction, seed=seed,
                      device=device, workers=workers, **changes)
    if folds is not None:
        summary = train_folds(data_clean, out, cfg, open_cache(cache_dir), folds, test=test,
                              progress=progress_enabled())
        _print_folds(summary)
        typer.echo(f"folds: {out / 'folds.json'}")
        tracking = tracking_choice(mlflow, tracking_uri, experiment, ctx.parent.params if ctx.parent else None)
        sources = {"data_clean": str(data_clean), "test": str(test) if test else None}
        where = track_folds(summary, cfg.to_dict(), out, sources, tracking)
        if where:
            typer.echo(where)
        return summary
    metrics = train_supervised(data_clean, out, cfg, open_cache(cache_dir), test=test,
                               progress=progress_enabled())
    best = metrics["best_epoch"]
    typer.echo(f"trained {metrics['mode']} mode on {metrics['n_train']} images "
               f"(validation {metrics['n_val']}); best epoch {best.get('epoch')} "
               f"val macro-F1 {best.get('val_macro_f1', float('nan')):.3f}")
    if "test" in metrics:
        typer.echo(f"test accuracy {metrics['test']['accuracy']:.3f}, macro-F1 {metrics['test']['macro_f1']:.3f}")
    print_skips(typer.echo, [(s["path"], s["reason"]) for s in metrics["skipped"]])
    typer.echo(f"checkpoint: {out}")


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
    workers: Optional[int] = typer.Option(None, help="Decoding workers (default: cores - 1)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache folder (default: ~/.cache/autolabel)."),
):
    """Label images with a trained checkpoint."""
    frame, skipped = predict_to_csv(checkpoint, images, out, open_cache(cache_dir), n_views=views,
                                    batch_size=batch_size, workers=workers, progress=progress_enabled())
    typer.echo(f"predicted {len(frame)} images -> {out}")
    print_skips(typer.echo, skipped)
