"""`autolabel lr-find`: the learning-rate range test for the head, as a picture and a suggestion."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autolabel.cli.common import open_cache, print_skips, progress_enabled, tracking_for, weights_choice
from autolabel.cli.options import (CACHE_DIR, DATA_CLEAN, EXPERIMENT, HEAD, IMG_SIZE, LOSS, MODEL, PRETRAINED, SEED,
                                   TRACKING_URI, WEIGHTS, WORKERS, mlflow_switch)
from autolabel.supervised import lr_find_job
from autolabel.tracking_tools import track_lr_find
from classification.config import TrainConfig


def lr_find(
    ctx: typer.Context,
    data_clean: Path = DATA_CLEAN,
    out: Path = typer.Option(..., "--out", help="Folder for lr_find.png and lr_find.json."),
    start: float = typer.Option(1e-6, help="First learning rate of the sweep."),
    end: float = typer.Option(1.0, help="Last learning rate of the sweep."),
    steps: int = typer.Option(100, help="Minibatches in the sweep (one per learning rate)."),
    model: str = MODEL,
    weights: Optional[Path] = WEIGHTS,
    pretrained: Optional[bool] = PRETRAINED,
    img_size: Optional[int] = IMG_SIZE,
    head: str = HEAD,
    optimizer: str = typer.Option("auto", help="adamw | sgd (auto and lbfgs sweep adamw: lbfgs has no lr)."),
    loss: str = LOSS,
    batch_size: int = typer.Option(64, help="Minibatch size."),
    seed: int = SEED,
    device: str = typer.Option("auto", help="auto | cpu | cuda (features only: the sweep trains the head)."),
    workers: Optional[int] = WORKERS,
    cache_dir: Optional[Path] = CACHE_DIR,
    mlflow: Optional[bool] = mlflow_switch("Track in MLflow"),
    tracking_uri: Optional[str] = TRACKING_URI,
    experiment: Optional[str] = EXPERIMENT,
):
    """Sweep the head's learning rate on cached features; plot the loss and suggest an LR."""
    # head mode even on CUDA: the sweep trains the head on cached features
    cfg = TrainConfig(model=model, weights=weights_choice(weights, pretrained), mode="head", head=head,
                      optimizer=optimizer, loss=loss, batch_size=batch_size, img_size=img_size, seed=seed,
                      device=device, workers=workers)
    record, skipped = lr_find_job(data_clean, out, cfg, open_cache(cache_dir), (start, end, steps),
                                  progress=progress_enabled())
    print_skips(typer.echo, skipped)
    typer.echo(f"swept {record['steps_run']} of {steps} steps ({record['optimizer']}); "
               f"suggested learning rate: {record['suggested']:.2e}")
    typer.echo(f"plot: {out / 'lr_find.png'}")
    where = track_lr_find(record, out, tracking_for(ctx, mlflow, tracking_uri, experiment))
    if where:
        typer.echo(where)
    return record
