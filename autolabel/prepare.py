"""Dataset preparation behind `autolabel data` (seed 001's tools): a folder per class as a
path,label CSV plus a class map, and stratified folds with train/valid splits."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from classification.data import ImageSet, load_labeled, save_class_map, stratified_folds
from classification.fileio import write_csv


def write_label_csv(in_dir: str | Path, out_dataset: str | Path, out_labeling: str | Path) -> ImageSet:
    """Write `in_dir`'s images as a path,label CSV (paths relative to the CSV where they lie below
    it) and its class map; returns the images found."""
    images = load_labeled(in_dir)
    root = Path(out_dataset).resolve().parent
    paths = [os.path.relpath(p, root) if Path(p).is_relative_to(root) else p for p in images.paths]
    write_csv(out_dataset, pd.DataFrame({"path": paths, "label": [images.classes[y] for y in images.labels]}))
    save_class_map(out_labeling, images.classes)
    return images


def write_folds(in_csv: str | Path, out_csv: str | Path, n_folds: int, train_folds: set[int],
                seed: int) -> pd.DataFrame:
    """`in_csv` with a stratified `fold` column and `split` = train for `train_folds`, else valid;
    writes it to `out_csv` and its two halves to <out>_train.csv and <out>_valid.csv. The CSV's
    own columns are kept when its rows are the images found."""
    frame = pd.read_csv(in_csv, dtype=str, keep_default_na=False) if Path(in_csv).is_file() else None
    images = load_labeled(in_csv)  # validates the CSV and its paths
    if frame is None or len(frame) != len(images):
        frame = pd.DataFrame({"path": images.paths})
        frame["label"] = [images.classes[y] for y in images.labels]
    folds = stratified_folds(images.labels, n_folds, seed)
    frame = frame.assign(fold=folds, split=["train" if f in train_folds else "valid" for f in folds])
    write_csv(out_csv, frame)
    stem = Path(out_csv).with_suffix("")
    write_csv(f"{stem}_train.csv", frame[frame.split == "train"])
    write_csv(f"{stem}_valid.csv", frame[frame.split == "valid"])
    return frame
