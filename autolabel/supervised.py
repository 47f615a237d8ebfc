"""Supervised jobs behind `autolabel train`, `autolabel predict` and `autolabel lr-find`."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from classification.cache import FeatureCache
from classification.checkpoint import load_checkpoint, save_checkpoint
from classification.config import TrainConfig
from classification.data import ImageSet, load_labeled, load_unlabeled, stratified_split
from classification.engine import fit
from classification.fileio import write_csv, write_json
from classification.folds import cross_validate, score_images, summarize
from classification.inference import predict
from classification.lr_find import lr_find, lr_find_png
from classification.metrics import confusion_png, report
from classification.train.rotation import rotation_png

_logger = logging.getLogger(__name__)


def train_supervised(data_clean: str | Path, out: str | Path, cfg: TrainConfig, cache: FeatureCache,
                     test: str | Path | None = None, progress: bool = False) -> dict:
    """Split human labels, fit, evaluate on validation (and `test`), and write a checkpoint folder.

    Writes model.pt, classes.json, config.json, metrics.json and confusion_matrix.png to `out`
    (with aux_rotation also rotation_confusion.png; its numbers are in metrics.json's best_epoch).
    """
    labeled = load_labeled(data_clean)
    train_idx, val_idx = stratified_split(labeled.labels, cfg.val_fraction, cfg.seed)
    result = fit(cfg, labeled.subset(train_idx), labeled.subset(val_idx), cache, progress=progress)
    out = Path(out)
    save_checkpoint(out, result.model, labeled.classes, cfg, result.data_cfg)
    metrics = {"mode": result.mode, "n_train": len(train_idx), "n_val": len(val_idx),
               "best_epoch": result.best, "history": result.history,
               "skipped": [{"path": p, "reason": r} for p, r in labeled.skipped + result.skipped]}
    target = load_labeled(test, classes=labeled.classes) if test else labeled.subset(val_idx)
    name = "test" if test else "val"
    if len(target):
        target_scores, y_true, y_pred = score_images(result, target, cache, progress)
        metrics[name] = {**target_scores, "report": report(y_true, y_pred, labeled.classes)}
        confusion_png(y_true, y_pred, labeled.classes, out / "confusion_matrix.png",
                      title=f"Confusion matrix ({name})")
    rotation_png(result.best, out / "rotation_confusion.png")
    write_json(out / "metrics.json", metrics)
    return metrics


def train_folds(data_clean: str | Path, out: str | Path, cfg: TrainConfig, cache: FeatureCache,
                n_folds: int, test: str | Path | None = None, progress: bool = False) -> dict:
    """Stratified k-fold cross-validation of `train_supervised`'s training; writes `folds.json`.

    No checkpoint is written: the k models only measure how well (and how steadily) the setup
    trains; `autolabel train` without folds makes the model to use.
    """
    labeled = load_labeled(data_clean)
    target = load_labeled(test, classes=labeled.classes) if test else None
    results = cross_validate(cfg, labeled, cache, n_folds, test=target, progress=progress)
    summary = {"n_folds": n_folds, "seed": cfg.seed, "n_images": len(labeled), "classes": labeled.classes,
               "mean_std": summarize(results),
               "folds": [_fold_record(r, labeled) for r in results],
               "skipped": [{"path": p, "reason": r} for p, r in labeled.skipped]}
    if target is not None:
        summary["test_mean_std"] = summarize(results, "test")
    write_json(Path(out) / "folds.json", summary)
    return summary


def _fold_record(r, labeled: ImageSet) -> dict:
    held = labeled.subset(r.held_out)
    record = {"fold": r.fold, "n_train": r.n_train, "n_val": r.n_val, "n_held_out": len(held),
              "best_epoch": r.best_epoch, **r.scores,
              "held_out": [{"path": p, "label": labeled.classes[y]} for p, y in zip(held.paths, held.labels)]}
    if r.test is not None:
        record["test"] = r.test
    return record


def predict_to_csv(checkpoint: str | Path, images: str | Path, out_csv: str | Path, cache: FeatureCache,
                   n_views: int = 1, batch_size: int = 64, workers: int | None = None,
                   progress: bool = False) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Predict every image under `images` (folder or CSV) and write path,label,confidence,prob_*."""
    model, classes, cfg, data_cfg = load_checkpoint(checkpoint)
    pool = _image_source(images)
    kind = "eval" if n_views <= 1 else "weak"
    pred = predict(model, pool, data_cfg, cache, kind=kind, n_views=n_views, runtime=cfg.runtime,
                   batch_size=batch_size, workers=workers, progress=progress, tail_blocks=cfg.tail_blocks)
    probs = pred.probs[pred.ok]
    frame = pd.DataFrame({"path": np.array(pool.paths)[pred.ok],
                          "label": np.array(classes)[probs.argmax(1)] if len(probs) else [],
                          "confidence": probs.max(1) if len(probs) else []})
    for i, c in enumerate(classes):
        frame[f"prob_{c}"] = probs[:, i] if len(probs) else []
    write_csv(out_csv, frame)
    return frame, pool.skipped + pred.skipped


def lr_find_job(data_clean: str | Path, out: str | Path, cfg: TrainConfig, cache: FeatureCache,
                sweep: tuple[float, float, int], progress: bool = False) -> tuple[dict, list[tuple[str, str]]]:
    """The learning-rate range test of the head on `data_clean`, `sweep` = (start, end, steps):
    writes lr_find.json (the record returned) and lr_find.png; also returns the files skipped."""
    start, end, steps = sweep
    labeled = load_labeled(data_clean)
    result = lr_find(cfg, labeled, cache, start=start, end=end, steps=steps, progress=progress)
    record = {"data_clean": str(data_clean), "start": start, "end": end, "steps": steps,
              "n_images": len(labeled), "config": cfg.to_dict(), **result.to_dict()}
    write_json(Path(out) / "lr_find.json", record)
    lr_find_png(result, Path(out) / "lr_find.png")
    return record, labeled.skipped + result.skipped


def _image_source(images: str | Path) -> ImageSet:
    """A folder or CSV of images to predict; a labelled CSV's labels are ignored."""
    return load_unlabeled(images)
