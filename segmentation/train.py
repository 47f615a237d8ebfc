"""`train_segmenter()`: pairs on disk -> a checkpoint folder with metrics and pictures.

Splits: with `split` (stems, one a line) the listed pairs train and the others are the test set
(or only those in `test_split`); without it every pair trains and there is no test set. The
validation pairs are drawn from the training pairs (`val_fraction`, seeded).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classification.errors import InputError
from classification.fileio import write_json
from classification.models import check_model_name
from segmentation.checkpoint import Segmenter, save_segmenter
from segmentation.config import SegConfig
from segmentation.data import MaskSet, load_pairs, read_split, report_skips, select
from segmentation.engine import Arrays, fit
from segmentation.inference import make_runner, predict_probs
from segmentation.metrics import confusion, image_iou, scores
from segmentation.pictures import curves_png, panels_png
from segmentation.transforms import decode_pairs

_logger = logging.getLogger(__name__)
N_PICTURES = 4  # images in each of the best and worst panels


@dataclass(frozen=True)
class TrainSpec:
    """Where the pairs are and how they split."""
    images: Path                 # image folder (any depth)
    masks: Path                  # mask folder, PNGs of class indices, same stems
    classes: Path | None = None  # index,name CSV; default: classes.csv in/beside the mask folder, else class_<i>
    split: Path | None = None    # training stems; the other pairs are the test set
    test_split: Path | None = None  # test stems (default: every pair not in `split`)


@dataclass
class Sets:
    train: MaskSet
    val: MaskSet
    test: MaskSet
    skipped: list[tuple[str, str]]


def load_sets(spec: TrainSpec, val_fraction: float, seed: int) -> Sets:
    pairs = load_pairs(spec.images, spec.masks, spec.classes)
    train, test = pairs, pairs.subset([])
    if spec.split is not None:
        train, test = select(pairs, read_split(spec.split), str(spec.split))
    if spec.test_split is not None:
        test = select(test if spec.split is not None else pairs, read_split(spec.test_split), str(spec.test_split))[0]
    train_idx, val_idx = val_split(len(train), val_fraction, seed)
    report_skips(pairs.skipped)
    return Sets(train.subset(train_idx), train.subset(val_idx), test, pairs.skipped)


def val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): a seeded share, at least one of each when n >= 2."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_segmenter(spec: TrainSpec, cfg: SegConfig, out: Path, progress: bool = False) -> dict:
    """Train, write the checkpoint folder (model.pt, classes.json, config.json), metrics.json,
    curves.png and, for the test set (else validation), best/worst pictures. Returns the metrics."""
    start = time.perf_counter()
    check_model_name(cfg.encoder)  # before minutes of loading
    sets = load_sets(spec, cfg.val_fraction, cfg.seed)
    if len(sets.train) == 0:
        raise InputError("no training pairs left after the split")
    train_arrays = decode_pairs(sets.train, cfg.max_side)
    val_arrays = decode_pairs(sets.val, cfg.max_side)
    result = fit(cfg, train_arrays, val_arrays, sets.train.classes, progress=progress)
    seg = Segmenter(result.model, sets.train.classes, cfg, result.mean, result.std)
    out = Path(out)
    save_segmenter(out, seg)
    curves_png(result.history, out / "curves.png")
    metrics = {"n_train": len(sets.train), "n_val": len(sets.val), "n_test": len(sets.test),
               "classes": seg.classes, "best_epoch": result.best, "history": result.history,
               "train_seconds": result.train_seconds,
               "skipped": [{"path": p, "reason": r} for p, r in sets.skipped]}
    scored, arrays = (("test", sets.test) if len(sets.test) else ("val", sets.val))
    if len(arrays):
        decoded = decode_pairs(arrays, cfg.max_side) if scored == "test" else val_arrays
        report = evaluate(seg, decoded, tta=cfg.tta)
        metrics[scored] = report["scores"]
        write_pictures(report, arrays, decoded, seg.classes, out, scored)
    metrics["wall_seconds"] = time.perf_counter() - start
    write_json(out / "metrics.json", metrics)
    return metrics


def evaluate(seg: Segmenter, arrays: Arrays, tta: bool = False, runtime: str = "torch",
             cache_root: Path | None = None) -> dict:
    """Scores over the set, and each image's prediction and IoU (for the pictures)."""
    run = make_runner(seg.model, runtime, "cpu", cache_root)
    k = len(seg.classes)
    cm, preds, ious = np.zeros((k, k), np.int64), [], []
    for (_, truth), probs in zip(arrays, predict_probs(run, (img for img, _ in arrays), seg.mean, seg.std, tta)):
        pred = probs.argmax(0).astype(np.uint8)
        cm += confusion(truth, pred, k)
        preds.append(pred)
        ious.append(image_iou(truth, pred, k))
    return {"scores": scores(cm, seg.classes), "preds": preds, "image_iou": np.array(ious)}


def write_pictures(report: dict, pairs: MaskSet, arrays: Arrays, classes: list[str], out: Path,
                   split: str) -> None:
    order = np.argsort(report["image_iou"], kind="stable")
    n = min(N_PICTURES, len(order))
    for name, rows in (("best", order[::-1][:n]), ("worst", order[:n])):
        panel = [{"name": pairs.stems[i], "image": arrays[i][0], "truth": arrays[i][1],
                  "pred": report["preds"][i], "iou": report["image_iou"][i]} for i in rows]
        panels_png(panel, classes, out / f"{split}_{name}.png", f"{split}: {name} {n} by IoU")
