"""`autolabel data tag2label` and `autolabel data split`: seed 001's dataset preparation."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import typer

from classification.data import load_labeled, save_class_map, stratified_folds
from classification.errors import InputError
from classification.fileio import write_csv

app = typer.Typer(help="Dataset preparation: folder to CSV, stratified folds.", no_args_is_help=True)


@app.command("tag2label")
def tag2label(
    in_dir: Path = typer.Option(..., "--in-dir", help="A folder per class."),
    out_dataset: Path = typer.Option(..., "--out-dataset", help="CSV to write: path,label."),
    out_labeling: Path = typer.Option(..., "--out-labeling", help="Class map JSON to write."),
):
    """Turn a folder per class into a path,label CSV and a class map."""
    images = load_labeled(in_dir)
    root = out_dataset.resolve().parent
    paths = [os.path.relpath(p, root) if Path(p).is_relative_to(root) else p for p in images.paths]
    write_csv(out_dataset, pd.DataFrame({"path": paths, "label": [images.classes[y] for y in images.labels]}))
    save_class_map(out_labeling, images.classes)
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
    try:
        chosen = {int(f) for f in train_folds.split(",") if f.strip()}
    except ValueError:
        raise InputError(f"--train-folds must be comma-separated integers, got {train_folds!r}") from None
    if not chosen or not chosen <= set(range(n_folds)):
        raise InputError(f"--train-folds must be fold ids in 0..{n_folds - 1}, got {train_folds!r}")
    frame = pd.read_csv(in_csv, dtype=str, keep_default_na=False) if in_csv.is_file() else None
    images = load_labeled(in_csv)  # validates the CSV and its paths
    if frame is None or len(frame) != len(images):
        frame = pd.DataFrame({"path": images.paths})
        frame["label"] = [images.classes[y] for y in images.labels]
    folds = stratified_folds(images.labels, n_folds, seed)
    frame = frame.assign(fold=folds, split=["train" if f in chosen else "valid" for f in folds])
    write_csv(out_csv, frame)
    stem = out_csv.with_suffix("")
    write_csv(f"{stem}_train.csv", frame[frame.split == "train"])
    write_csv(f"{stem}_valid.csv", frame[frame.split == "valid"])
    typer.echo(f"{len(frame)} rows in {n_folds} folds: {int((frame.split == 'train').sum())} train, "
               f"{int((frame.split == 'valid').sum())} valid -> {out_csv}")
