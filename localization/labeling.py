"""The pseudo-box loop: each trial trains on the human boxes and the pseudo-boxes accepted so far,
predicts the rest of the pool with flip test-time augmentation, and accepts an image when its
class confidence and the agreement (IoU) of its two views' boxes both reach the threshold.
Accepted images keep the label, box and trial that accepted them; the loop stops after
`n_trials`, or earlier when a trial accepts nothing or the pool is used up.

Validation (the best epoch) comes from human boxes only, the same images in every trial.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from classification.cache import FeatureCache
from classification.config import check_field_types
from classification.errors import InputError
from localization.boxes import box_iou
from localization.config import LocalizeConfig
from localization.data import BoxSet
from localization.decision import BoxRule, propose
from localization.pipeline import Trained, predict_views, split_validation, train_localizer
from localization.views import EVAL, FLIP

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelSpec:
    n_trials: int = 3
    threshold: float = 0.9   # both the class confidence and the views' box IoU must reach it

    def __post_init__(self):
        check_field_types(self)
        if self.n_trials < 1:
            raise InputError(f"--n-trials must be at least 1, got {self.n_trials}")
        if not 0 <= self.threshold <= 1:
            raise InputError(f"--threshold must be in [0, 1], got {self.threshold}")


@dataclass
class PoolState:
    """Per pool image: label, box (original pixels), confidence, agreement, and the trial that
    accepted it (0: not accepted)."""
    labels: np.ndarray
    boxes: np.ndarray
    confidence: np.ndarray
    agreement: np.ndarray
    trial: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "PoolState":
        return cls(np.zeros(n, np.int64), np.full((n, 4), np.nan), np.zeros(n), np.zeros(n), np.zeros(n, np.int64))

    @property
    def accepted(self) -> np.ndarray:
        return self.trial > 0


@dataclass
class Labeled:
    """What the loop ends with: the last trial's model, the pool's state, one record per trial."""
    trained: Trained
    state: PoolState
    history: list[dict] = field(default_factory=list)


def label_pool(human: BoxSet, pool: BoxSet, cfg: LocalizeConfig, cache: FeatureCache, spec: LabelSpec,
               truth: BoxSet | None = None, progress: bool = False,
               on_trial: Callable[[dict], None] = lambda record: None) -> Labeled:
    """Run the loop; `truth` (boxes for some pool images) only scores what was accepted."""
    tr, va = split_validation(human, cfg.training.val_fraction, cfg.training.seed)
    train_set, val = human.subset(tr), human.subset(va)
    state, rule, history = PoolState.empty(len(pool)), BoxRule(spec.threshold, spec.threshold), []
    trained = None
    for trial in range(1, spec.n_trials + 1):
        data = train_set.concat(pseudo_boxes(pool, state))
        trained = train_localizer(data, cfg, cache, progress, val=val)
        new = accept(trained, pool, state, rule, trial, cache, progress)
        record = {"trial": trial, "n_train": len(data), "accepted": int(new.sum()),
                  "accepted_total": int(state.accepted.sum()), "pool": len(pool),
                  "best_epoch": trained.result.best, **audit(pool, state, truth)}
        history.append(record)
        _logger.info("trial %d: %s", trial, record)
        on_trial(record)
        if not new.any() or state.accepted.all():
            break
    return Labeled(trained, state, history)


def pseudo_boxes(pool: BoxSet, state: PoolState) -> BoxSet:
    """The accepted pool images with their pseudo-labels and pseudo-boxes."""
    acc = np.flatnonzero(state.accepted)
    return pool.subset(acc).with_boxes(state.labels[acc], state.boxes[acc])


def accept(trained: Trained, pool: BoxSet, state: PoolState, rule: BoxRule, trial: int,
           cache: FeatureCache, progress: bool) -> np.ndarray:
    """Predict the pool (plain and mirrored view), record the images `rule` accepts for the first
    time in `state`, and return their mask."""
    pred = predict_views(trained, pool.images, cache, views=[EVAL, FLIP], progress=progress)
    prop = propose(pred.probs, pred.boxes, pred.ok, rule)
    new = prop.accepted & ~state.accepted
    state.labels[new], state.boxes[new] = prop.labels[new], prop.boxes[new]
    state.confidence[new], state.agreement[new] = prop.confidence[new], prop.agreement[new]
    state.trial[new] = trial
    return new


def audit(pool: BoxSet, state: PoolState, truth: BoxSet | None) -> dict:
    """Class precision and mean IoU of the accepted images that `truth` has (matched by content);
    {} without truth."""
    if truth is None:
        return {}
    where = {h: i for i, h in enumerate(truth.images.hashes)}
    rows = [(p, where[h]) for p, h in enumerate(pool.images.hashes) if state.accepted[p] and h in where]
    if not rows:
        return {"n_audited": 0, "class_precision": None, "mean_iou": None}
    p, t = map(np.array, zip(*rows))
    boxed = truth.has_box[t]
    iou = box_iou(state.boxes[p[boxed]], truth.boxes[t[boxed]]) if boxed.any() else np.zeros(0)
    return {"n_audited": len(rows),
            "class_precision": float((state.labels[p] == truth.images.labels[t]).mean()),
            "mean_iou": float(iou.mean()) if len(iou) else None}
