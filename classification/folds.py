"""Stratified k-fold cross-validation of `fit()`.

Each labelled image is scored exactly once, by a model trained on the other folds. With a few
labels per class a single validation split is a noisy estimate; the spread over folds shows how
noisy. Inside the training folds `fit()` still carves its own validation split
(`cfg.val_fraction`) for early stopping, so the held-out fold never chooses anything.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.data import ImageSet, stratified_folds, stratified_split
from classification.engine import FitResult, fit
from classification.errors import InputError
from classification.metrics import scores

_logger = logging.getLogger(__name__)


@dataclass
class FoldResult:
    """held_out: indices into the image set; scores: accuracy and macro-F1 on those images
    (`test`: on the test set, when one was given); best_epoch: chosen on the fold's own split."""
    fold: int
    held_out: np.ndarray
    n_train: int
    n_val: int
    best_epoch: int
    scores: dict
    test: dict | None = None


def check_folds(images: ImageSet, n_folds: int) -> None:
    """Every class needs an image in each held-out fold (and so some left to train on)."""
    if n_folds < 2:
        raise InputError(f"--folds must be at least 2, got {n_folds}")
    counts = np.bincount(images.labels, minlength=len(images.classes))
    small = np.flatnonzero(counts < n_folds)
    if len(small):
        c = small[np.argmin(counts[small])]
        fewest = int(counts[c])
        hint = f"use --folds {fewest} or add labels" if fewest >= 2 else "add labels to it"
        raise InputError(f"--folds {n_folds} needs at least {n_folds} images in every class, but "
                         f"class {images.classes[c]!r} has {fewest}; {hint}")


def cross_validate(cfg: TrainConfig, images: ImageSet, cache: FeatureCache, n_folds: int,
                   test: ImageSet | None = None, progress: bool = False) -> list[FoldResult]:
    """Train `n_folds` models, each on all folds but one, and score each on its held-out fold."""
    check_folds(images, n_folds)
    fold_of = stratified_folds(images.labels, n_folds, cfg.seed)
    results = []
    for k in range(n_folds):
        held_out, rest = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
        tr, va = stratified_split(images.labels[rest], cfg.val_fraction, cfg.seed)
        result = fit(cfg, images.subset(rest[tr]), images.subset(rest[va]), cache, progress=progress)
        fold_scores = score_images(result, images.subset(held_out), cache, progress)[0]
        test_scores = score_images(result, test, cache, progress)[0] if test is not None else None
        _logger.info("fold %d/%d: accuracy %.3f, macro-F1 %.3f on %d held-out images", k + 1, n_folds,
                     fold_scores["accuracy"], fold_scores["macro_f1"], len(held_out))
        results.append(FoldResult(k, held_out, len(tr), len(va), int(result.best.get("epoch", -1)),
                                  fold_scores, test_scores))
    return results


def score_images(result: FitResult, images: ImageSet, cache: FeatureCache,
                 progress: bool = False) -> tuple[dict, np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 of a fitted model on labelled `images`, with the true and predicted
    labels of the images that could be decoded."""
    guess = result.predict(images, cache, progress=progress)
    ok = guess >= 0
    y_true, y_pred = images.labels[ok], guess[ok]
    return scores(y_true, y_pred, len(images.classes)), y_true, y_pred


def summarize(results: list[FoldResult], key: str = "scores") -> dict:
    """Mean and standard deviation (over folds, ddof=0) of each score."""
    rows = [getattr(r, key) for r in results if getattr(r, key) is not None]
    if not rows:
        return {}
    return {name: {"mean": float(np.mean([r[name] for r in rows])),
                   "std": float(np.std([r[name] for r in rows]))} for name in rows[0]}
