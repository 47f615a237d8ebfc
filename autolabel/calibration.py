"""Calibrated probabilities and what they say about the accepted labels.

A head trained on a few labels (and then on its own pseudo-labels) is not calibrated: its
confidence is not the chance that its label is right. Temperature scaling (Guo et al. 2017)
fixes the scale with one parameter T, fitted on labelled images the head did not train on:
here, each trial, by cross-validation over the human labels (`cv_temperature`). The calibrated
confidence of an accepted label is then its estimated chance of being right, and the mean over
the accepted set its **estimated precision** (`estimated_precision`); `precision_bars` turns a
target precision into per-class thresholds.

Known limit, measured (see the README): with very few labels per class the human labels of a
held-out fold have already shaped the pseudo-labels of their neighbours, so cross-validation is
optimistic and the estimate runs high; with tens of labels per class it is close.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.data import ImageSet, stratified_folds, stratified_split
from classification.engine import fit

MIN_PROB = 1e-12  # log(0) guard: a probability the head rounded to 0 is still a finite logit


def log_probs(probs: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant (all that softmax and temperature scaling need). (N, C)."""
    return np.log(np.maximum(probs, MIN_PROB))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row softmax of logits / temperature, max-subtracted (never overflows). (N, C)."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def scale_probs(probs: np.ndarray, temperature: float) -> np.ndarray:
    """`probs` recalibrated with `temperature`; all-zero rows (undecodable images) stay zero."""
    if len(probs) == 0 or temperature == 1.0:
        return probs
    keep = probs.sum(axis=1, keepdims=True) > 0
    return np.where(keep, softmax(log_probs(probs), temperature), 0.0).astype(probs.dtype)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 20.0,
                    n_iter: int = 60) -> float:
    """The temperature T that minimises the NLL of softmax(logits / T) on held-out labelled logits.

    The NLL is convex in 1/T, so a golden-section search over log T in [lo, hi] finds it. The
    logits must be out-of-sample for `labels`: in-sample logits are over-confident. No labels: 1.
    """
    assert logits.ndim == 2 and labels.shape == (len(logits),), (logits.shape, labels.shape)
    if len(labels) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float((np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), labels]).mean())

    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(n_iter):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(d)
    return float(np.exp((a + b) / 2.0))


def estimated_precision(confidence: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[float | None, list]:
    """The mean calibrated confidence of the accepted labels (`labels` >= 0): overall and per
    class (None where nothing is accepted). If the confidences are calibrated, it is the expected
    share of correct labels."""
    assert confidence.shape == labels.shape, (confidence.shape, labels.shape)
    acc = labels >= 0
    overall = float(confidence[acc].mean()) if acc.any() else None
    per = [float(confidence[labels == c].mean()) if (labels == c).any() else None for c in range(n_classes)]
    return overall, per


def precision_bars(confidence: np.ndarray, guess: np.ndarray, ok: np.ndarray, target: float,
                   n_classes: int) -> np.ndarray:
    """Per-class thresholds that accept, in each predicted class, the largest set whose estimated
    precision (mean calibrated confidence) is at least `target`.

    Ranked by confidence, the running mean only falls, so the set is the longest prefix whose
    running mean is >= target, and the bar is its last confidence. A class with no such prefix
    gets the bar 1.0 (it then accepts nothing: its best confidence is below target <= 1). (C,).
    """
    assert confidence.shape == guess.shape == ok.shape, (confidence.shape, guess.shape, ok.shape)
    bars = np.ones(n_classes)
    for c in range(n_classes):
        idx = np.flatnonzero(ok & (guess == c))
        ranked = np.sort(confidence[idx])[::-1]
        running = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
        keep = np.flatnonzero(running >= target)
        if len(keep):
            bars[c] = ranked[keep[-1]]
    return bars


@dataclass(frozen=True)
class CrossFit:
    """What `cv_temperature` trains its fold heads on (the loop's images and settings)."""
    train: TrainConfig      # the loop's training settings (each fold head is fitted with them)
    humans: ImageSet        # every human label
    pseudo: ImageSet        # the accepted pseudo-labels (trained on in every fold, strong views)
    cache: FeatureCache     # the run's feature cache (the fold heads reuse its features)
    folds: int              # number of folds over the human labels


def cv_temperature(cf: CrossFit) -> tuple[float, float | None]:
    """Temperature fitted on out-of-fold predictions of the human labels: fold k's head trains on
    the other folds' human labels (its own validation split carved from them, as the loop's) and
    on every accepted pseudo-label, and predicts fold k. Returns (T, out-of-fold accuracy);
    (1.0, None) when the classes have too few labels for two folds."""
    humans = cf.humans
    counts = np.bincount(humans.labels, minlength=len(humans.classes))
    n_folds = min(cf.folds, int(counts.max()))
    if n_folds < 2:
        return 1.0, None
    fold_of = stratified_folds(humans.labels, n_folds, cf.train.seed)
    probs = np.zeros((len(humans), len(humans.classes)), np.float32)
    scored = np.zeros(len(humans), bool)
    for k in range(n_folds):
        held, rest = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
        tr, va = stratified_split(humans.labels[rest], cf.train.val_fraction, cf.train.seed)
        train = humans.subset(rest[tr]).concat(cf.pseudo)
        strong = np.r_[np.zeros(len(tr), bool), np.ones(len(cf.pseudo), bool)]
        result = fit(cf.train, train, humans.subset(rest[va]), cf.cache, strong=strong)
        pred = result.predict_probs(humans.subset(held), cf.cache)
        probs[held], scored[held] = pred.probs, pred.ok
    if not scored.any():
        return 1.0, None
    logits, labels = log_probs(probs[scored]), humans.labels[scored]
    return fit_temperature(logits, labels), float((logits.argmax(1) == labels).mean())
