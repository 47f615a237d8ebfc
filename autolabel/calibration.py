"""Calibrated probabilities and what they say about the accepted labels.

A head trained on a few labels is not calibrated: its confidence is not the chance that its
label is right. Temperature scaling (Guo et al. 2017) fixes the scale with one parameter T,
fitted on labelled images the head did not train on: by cross-validation over the human labels
(`cv_temperature`), once, in trial 1, when the head has seen human labels only.

The **estimated precision** of the accepted labels is the mean, over them, of the probability
that this *reference* model (trial 1's head, trained on human labels only, calibrated) gives
each its label (`estimated_precision`); `precision_bars` turns a target precision into per-class
thresholds with the same scores. Why the reference and not the current head: a head trained on
its own pseudo-labels is confident about them whether they are right or not, and no held-out
human label can measure that, because every human label has already shaped the pseudo-labels
of its neighbours (cross-validating later trials' heads over the human labels was measured at
+8 to +20 points over the audited precision with 4 to 25 labels per class). The reference
never saw a pseudo-label, so the estimate is conservative: it does not credit what the loop
corrected (measured 2 to 12 points under the audited precision).
"""
from __future__ import annotations

import numpy as np

from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.data import ImageSet, stratified_folds, stratified_split
from classification.engine import fit

MIN_PROB = 1e-12  # log(0) guard: a probability the head rounded to 0 is still a finite logit
NOTHING = 1.01  # a bar no confidence reaches: the class accepts nothing


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


def label_scores(reference: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's estimated chance that `labels` (-1: none, score 0) is right: the reference
    model's calibrated probability of it. (N, C), (N,) -> (N,)."""
    assert reference.ndim == 2 and labels.shape == (len(reference),), (reference.shape, labels.shape)
    return np.where(labels >= 0, reference[np.arange(len(labels)), np.maximum(labels, 0)], 0.0)


def estimated_precision(scores: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[float | None, list]:
    """The mean score (`label_scores`) of the accepted labels (`labels` >= 0): overall and per
    class (None where nothing is accepted): the expected share of correct labels if the scores
    are calibrated chances."""
    assert scores.shape == labels.shape, (scores.shape, labels.shape)
    acc = labels >= 0
    overall = float(scores[acc].mean()) if acc.any() else None
    per = [float(scores[labels == c].mean()) if (labels == c).any() else None for c in range(n_classes)]
    return overall, per


def precision_bars(confidence: np.ndarray, scores: np.ndarray, guess: np.ndarray, ok: np.ndarray,
                   target: float, n_classes: int) -> np.ndarray:
    """Per-class confidence thresholds that accept, in each predicted class, the largest set taken
    by `confidence` whose estimated precision (mean of `scores`, see `label_scores`) is >= `target`.

    The set is the longest prefix of the class ranked by confidence whose running mean score is
    >= target (when scores fall with confidence, as calibrated ones do, no larger set meets it), and
    the bar is the last confidence in it. A class with no such prefix gets a bar above 1 (it accepts
    nothing). (C,).
    """
    assert confidence.shape == scores.shape == guess.shape == ok.shape
    bars = np.full(n_classes, NOTHING)
    for c in range(n_classes):
        idx = np.flatnonzero(ok & (guess == c))
        order = idx[np.argsort(-confidence[idx], kind="stable")]
        running = np.cumsum(scores[order]) / np.arange(1, len(order) + 1)
        keep = np.flatnonzero(running >= target)
        if len(keep):
            bars[c] = confidence[order[keep[-1]]]
    return bars


def cv_temperature(train: TrainConfig, humans: ImageSet, cache: FeatureCache, folds: int) -> tuple[float, float | None]:
    """Temperature fitted on out-of-fold predictions of the human labels: fold k's head trains,
    with `train`'s settings, on the other folds (its own validation split carved from them, as the
    loop's) and predicts fold k. Returns (T, out-of-fold accuracy); (1.0, None) when the classes
    have too few labels for two folds."""
    counts = np.bincount(humans.labels, minlength=len(humans.classes))
    n_folds = min(folds, int(counts.max()))
    if n_folds < 2:
        return 1.0, None
    fold_of = stratified_folds(humans.labels, n_folds, train.seed)
    probs = np.zeros((len(humans), len(humans.classes)), np.float32)
    scored = np.zeros(len(humans), bool)
    for k in range(n_folds):
        held, rest = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
        tr, va = stratified_split(humans.labels[rest], train.val_fraction, train.seed)
        result = fit(train, humans.subset(rest[tr]), humans.subset(rest[va]), cache)
        pred = result.predict_probs(humans.subset(held), cache)
        probs[held], scored[held] = pred.probs, pred.ok
    if not scored.any():
        return 1.0, None
    logits, labels = log_probs(probs[scored]), humans.labels[scored]
    return fit_temperature(logits, labels), float((logits.argmax(1) == labels).mean())
