"""`autolabel lr-find`: the learning-rate range test for the head, as a picture and a suggestion."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autolabel.cli.common import open_cache, print_skips, progress_enabled, weights_choice
from autolabel.tracking_tools import track_lr_find, tracking_choice
from classification.config import DEFAULT_MODEL, TrainConfig
from classification.data import load_labeled
from classification.fileio import write_json
from classification.lr_find import lr_find as find_lr
from classification.lr_find import lr_find_png


def lr_find(
    ctx: typer.Context,
    data_clean: Path = typer.Option(..., "--data-clean", help="Labelled images: a folder per class or a path,label CSV."),
    out: Path = typer.Option(..., "--out", help="Folder for lr_find.png and lr_find.json."),
    start: float = typer.Option(1e-6, help="First learning rate of the sweep."),
    end: float = typer.Option(1.0, help="Last learning rate of the sweep."),
    steps: int = typer.Option(100, help="Minibatches in the sweep (one per learning rate)."),
    model: str = typer.Option(DEFAULT_MODEL, help="Any timm model name."),
    weights: Optional[Path] = typer.Option(None, help="Backbone state-dict file."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained",
                                              help="Download timm hub weights / start from random weights."),
    img_size: Optional[int] = typer.Option(None, help="Input size; default: the model's."),
    head: str = typer.Option("linear", help="linear | mlp."),
    optimizer: str = typer.Option("auto", help="adamw | sgd (auto and lbfgs sweep adamw: lbfgs has no lr)."),
    loss: str = typer.Option("ce", help="ce | bce | focal."),
    batch_size: int = typer.Option(64, help="Minibatch size."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (features only: the sweep trains the head)."),
    workers: Optional[int] = typer.Option(None, help="Decoding workers (default: cores - 1)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache folder (default: ~/.cache/autolabel)."),
    mlflow: Optional[bool] = typer.Option(None, "--mlflow/--no-mlflow", help="Track in MLflow (default: on)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow server or store."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment (default: autolabel)."),
):
    """Sweep the head's learning rate on cached features; plot the loss and suggest an LR."""
    # head mode even on CUDA: the sweep trains the head on cached features
    cfg = TrainConfig(model=model, weights=weights_choice(weights, pretrained), mode="head", head=head,
                      optimizer=optimizer, loss=loss, batch_size=batch_size, img_size=img_size, seed=seed,
                      device=device, workers=workers)
    labeled = load_labeled(data_clean)
    result = find_lr(cfg, labeled, open_cache(cache_dir), start=start, end=end, steps=steps,
                     progress=progress_enabled())
    record = {"data_clean": str(data_clean), "start": start, "end": end, "steps": steps,
              "n_images": len(labeled), "config": cfg.to_dict(), **result.to_dict()}
    write_json(out / "lr_find.json", record)
    lr_find_png(result, out / "lr_find.png")
    print_skips(typer.echo, labeled.skipped + result.skipped)
    typer.echo(f"swept {len(result.lrs)} of {steps} steps ({result.optimizer}); "
               f"suggested learning rate: {result.suggested:.2e}")
    typer.echo(f"plot: {out / 'lr_find.png'}")
    tracking = tracking_choice(mlflow, tracking_uri, experiment, ctx.parent.params if ctx.parent else None)
    where = track_lr_find(record, out, tracking)
    if where:
        typer.echo(where)
    return record
