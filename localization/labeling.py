"""The pseudo-box loop: each trial trains on the human boxes and the pseudo-boxes accepted so far,
predicts the rest of the pool with flip test-time augmentation, and accepts an image when its
class confidence and the agreement (IoU) of its views' boxes both reach the threshold.
A trial trains `teachers` heads on the same data with consecutive seeds (the frozen trunk's maps
are shared, so each costs only its heads' fit): the pseudo-box is the mean over every teacher's
plain and mirrored view, and all those boxes must agree. The first teacher is the trial's model.
Accepted images keep the label, box and trial that accepted them; the loop stops after
`n_trials`, or earlier when a trial accepts nothing or the pool is used up (the record's "stop").
A loop resumes from the state and records of its completed trials (`Resumed`): the trials after
them run as they would have without the interruption.

Validation (the best epoch) comes from human boxes only, the same images in every trial.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from classification.cache import FeatureCache
from classification.config import check_field_types
from classification.errors import InputError
from localization.boxes import box_iou
from localization.config import LocalizeConfig
from localization.data import BoxSet
from localization.decision import BoxRule, Proposal, propose
from localization.pipeline import Trained, predict_views, split_validation, train_localizer
from localization.views import EVAL, FLIP

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelSpec:
    n_trials: int = 3
    threshold: float = 0.9   # both the class confidence and the views' box IoU must reach it
    teachers: int = 1        # heads trained per trial (seeds seed .. seed + teachers - 1)

    def __post_init__(self):
        check_field_types(self)
        if self.n_trials < 1:
            raise InputError(f"--n-trials must be at least 1, got {self.n_trials}")
        if self.teachers < 1:
            raise InputError(f"--teachers must be at least 1, got {self.teachers}")
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

    def to_dict(self) -> dict:
        """Plain lists for JSON (a missing box is null)."""
        boxes = [None if np.isnan(b).any() else b.tolist() for b in self.boxes]
        return {"labels": self.labels.tolist(), "boxes": boxes, "confidence": self.confidence.tolist(),
                "agreement": self.agreement.tolist(), "trial": self.trial.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "PoolState":
        boxes = np.array([[np.nan] * 4 if b is None else b for b in d["boxes"]], np.float64).reshape(-1, 4)
        return cls(np.array(d["labels"], np.int64), boxes, np.array(d["confidence"], np.float64),
                   np.array(d["agreement"], np.float64), np.array(d["trial"], np.int64))


@dataclass
class Resumed:
    """The pool's state after the completed trials and their records, to continue from."""
    state: PoolState
    history: list[dict]


@dataclass
class TrialOutcome:
    """What one trial did, for the callbacks: its model, the pool's proposal (every image's label,
    box, confidence, agreement and the rule's verdict), the newly accepted mask, the state after it."""
    trial: int
    trained: Trained
    proposal: Proposal
    new: np.ndarray
    state: PoolState


@dataclass
class Labeled:
    """What the loop ends with: the last trial's model, the pool's state, one record per trial."""
    trained: Trained | None
    state: PoolState
    history: list[dict] = field(default_factory=list)


@dataclass
class LabelRun:
    """How one run of the loop goes, besides its data and settings."""
    truth: BoxSet | None = None     # boxes for some pool images: only scores what was accepted
    progress: bool = False
    on_trial: Callable[[dict, TrialOutcome], None] = lambda record, outcome: None
    resume: Resumed | None = None   # continue after these trials


def label_pool(human: BoxSet, pool: BoxSet, cfg: LocalizeConfig, cache: FeatureCache, spec: LabelSpec,
               run: LabelRun | None = None) -> Labeled:
    """Run the loop (or continue it after `run.resume`'s trials). `Labeled.trained` is None when
    no trial was left to run."""
    run = run or LabelRun()
    truth, progress, resume = run.truth, run.progress, run.resume
    tr, va = split_validation(human, cfg.training.val_fraction, cfg.training.seed)
    train_set, val = human.subset(tr), human.subset(va)
    state = resume.state if resume else PoolState.empty(len(pool))
    history = list(resume.history) if resume else []
    rule, trained = BoxRule(spec.threshold, spec.threshold), None
    for trial in range(len(history) + 1, spec.n_trials + 1):
        if history and history[-1].get("stop") in STOPS:
            break
        data = train_set.concat(pseudo_boxes(pool, state))
        teachers = [train_localizer(data, seeded(cfg, i), cache, progress, val=val) for i in range(spec.teachers)]
        prop, new = accept(teachers, pool, state, rule, trial, cache, progress)
        trained = teachers[0]
        record = {"trial": trial, "n_train": len(data), "accepted": int(new.sum()),
                  "accepted_total": int(state.accepted.sum()), "pool": len(pool),
                  "best_epoch": trained.result.best, **audit(pool, state, truth),
                  "stop": stop_reason(new, state, trial, spec)}
        history.append(record)
        _logger.info("trial %d: %s", trial, record)
        run.on_trial(record, TrialOutcome(trial, trained, prop, new, state))
    return Labeled(trained, state, history)


STOPS = ("nothing accepted", "pool used up")  # a resumed loop with more trials still stops there


def stop_reason(new: np.ndarray, state: PoolState, trial: int, spec: LabelSpec) -> str | None:
    """Why the loop ends after this trial (None: it goes on)."""
    if not new.any():
        return STOPS[0]
    if state.accepted.all():
        return STOPS[1]
    return "n_trials" if trial >= spec.n_trials else None


def pseudo_boxes(pool: BoxSet, state: PoolState) -> BoxSet:
    """The accepted pool images with their pseudo-labels and pseudo-boxes."""
    acc = np.flatnonzero(state.accepted)
    return pool.subset(acc).with_boxes(state.labels[acc], state.boxes[acc])


def seeded(cfg: LocalizeConfig, offset: int) -> LocalizeConfig:
    """`cfg` with its training seed moved by `offset` (0: `cfg` itself)."""
    if offset == 0:
        return cfg
    return replace(cfg, training=replace(cfg.training, seed=(cfg.training.seed + offset) % 2**32))


def accept(teachers: list[Trained], pool: BoxSet, state: PoolState, rule: BoxRule, trial: int,
           cache: FeatureCache, progress: bool) -> tuple[Proposal, np.ndarray]:
    """Predict the pool (plain and mirrored view of every teacher), record the images `rule`
    accepts for the first time in `state`; return the proposal and their mask."""
    preds = [predict_views(t, pool.images, cache, views=[EVAL, FLIP], progress=progress) for t in teachers]
    probs, boxes = (np.concatenate([getattr(p, k) for p in preds]) for k in ("probs", "boxes"))
    prop = propose(probs, boxes, preds[0].ok, rule)
    new = prop.accepted & ~state.accepted
    state.labels[new], state.boxes[new] = prop.labels[new], prop.boxes[new]
    state.confidence[new], state.agreement[new] = prop.confidence[new], prop.agreement[new]
    state.trial[new] = trial
    return prop, new


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
