"""One training run with everything it leaves behind, in one folder:

    model.pt, classes.json, config.json   the checkpoint (see checkpoint.py)
    metrics.json      config version and resolved config, sizes, skips, per-epoch history, the best
                      epoch, scores on the validation (and test) split, the mean-box baseline
    curves.png        training curves
    best_worst.png    top-3 best and worst predictions by IoU on the test split (else validation)
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from classification.cache import FeatureCache
from classification.fileio import write_json
from localization.boxes import box_iou, from_relative, mean_box
from localization.checkpoint import save_localizer
from localization.config import LocalizeConfig
from localization.data import BoxSet
from localization.heads import score
from localization.pictures import best_worst_png, curves_png
from localization.pipeline import Trained, predict_views, split_validation, train_localizer

_logger = logging.getLogger(__name__)


def train_and_report(data: BoxSet, out: str | Path, cfg: LocalizeConfig, cache: FeatureCache,
                     test: BoxSet | None = None, progress: bool = False) -> dict:
    """Train on `data`, write the checkpoint, metrics and pictures into `out`; return the metrics."""
    out = Path(out)
    tr, va = split_validation(data, cfg.training.val_fraction, cfg.training.seed)
    trained = train_localizer(data.subset(tr), cfg, cache, progress, val=data.subset(va))
    save_localizer(out, trained)
    result = trained.result
    metrics = {"version": cfg.version, "config": cfg.to_dict(), "n_train": trained.n_train,
               "n_val": trained.n_val, "n_train_boxes": int(data.subset(tr).has_box.sum()),
               "skipped": [{"path": p, "reason": r} for p, r in data.skipped],
               "best_epoch": result.best, "history": result.history,
               "train_images_per_s": result.train_images / max(result.train_seconds, 1e-9)}
    baseline = mean_box(data.boxes[tr][data.subset(tr).has_box], data.sizes[tr][data.subset(tr).has_box])
    shown = test if test is not None and len(test) else data.subset(va)
    if len(shown):
        scores, paths, truth, predicted, captions = evaluate_boxes(trained, shown, cache)
        scores["mean_box_iou"] = float(box_iou(from_relative(baseline, shown.sizes[shown.has_box]),
                                               shown.boxes[shown.has_box]).mean())
        metrics["test" if shown is test else "validation"] = scores
        best_worst_png(paths, truth, predicted, captions, out / "best_worst.png")
    curves_png(result.history, out / "curves.png")
    write_json(out / "metrics.json", metrics)
    return metrics


def evaluate_boxes(trained: Trained, data: BoxSet, cache: FeatureCache):
    """(scores, and for the images with a box: paths, true boxes, predicted boxes, captions)."""
    pred = predict_views(trained, data.images, cache)
    ok = pred.ok
    scores = score(pred.probs[0][ok], pred.boxes[0][ok], data.images.labels[ok], data.boxes[ok])
    rows = np.flatnonzero(ok & data.has_box)
    classes = trained.classes
    captions = [f"{classes[data.images.labels[i]]} -> {classes[pred.probs[0][i].argmax()]}" for i in rows]
    return (scores, [data.images.paths[i] for i in rows], data.boxes[rows], pred.boxes[0][rows], captions)
