"""`autolabel data tag2label` and `autolabel data split`: seed 001's dataset preparation."""
from __future__ import annotations

from pathlib import Path

import typer

from autolabel.cli.options import int_list
from autolabel.prepare import write_folds, write_label_csv
from classification.errors import InputError

app = typer.Typer(help="Dataset preparation: folder to CSV, stratified folds.", no_args_is_help=True)


@app.command("tag2label")
def tag2label(
    in_dir: Path = typer.Option(..., "--in-dir", help="A folder per class."),
    out_dataset: Path = typer.Option(..., "--out-dataset", help="CSV to write: path,label."),
    out_labeling: Path = typer.Option(..., "--out-labeling", help="Class map JSON to write."),
):
    """Turn a folder per class into a path,label CSV and a class map."""
    images = write_label_csv(in_dir, out_dataset, out_labeling)
    typer.echo(f"{len(images)} images in {len(images.classes)} classes -> {out_dataset}, {out_labeling}")


@app.command("split")
def split(
    in_csv: Path = typer.Option(..., "--in-csv", help="A path,label CSV (for example from tag2label)."),
    out_csv: Path = typer.Option(..., "--out-csv", help="CSV to write with fold and split columns."),
    n_folds: int = typer.Option(5, "--n-folds"),
    train_folds: str = typer.Option("0,1,2,3", "--train-folds", help="Comma-separated fold ids used for training."),
    seed: int = typer.Option(0),
):
    """Stratified folds; also writes <out>_train.csv and <out>_valid.csv."""
    chosen = set(int_list(train_folds, "--train-folds"))
    if not chosen or not chosen <= set(range(n_folds)):
        raise InputError(f"--train-folds must be fold ids in 0..{n_folds - 1}, got {train_folds!r}")
    frame = write_folds(in_csv, out_csv, n_folds, chosen, seed)
    typer.echo(f"{len(frame)} rows in {n_folds} folds: {int((frame.split == 'train').sum())} train, "
               f"{int((frame.split == 'valid').sum())} valid -> {out_csv}")
