"""Images a person reviewed (`autolabel review`, fed back with `--reviewed`): approved or corrected
ones are human labels from the trial after the review on (the loop trains on them as on the
user's own, see `autolabel.trainset.training_set`), ones rejected without a correction are never
labelled. Either way they are no longer pseudo-labels, so this guard refuses them all; it runs
first, so that the class-balance cap spends no room on them."""
from __future__ import annotations

import logging

import numpy as np

from autolabel.guards.base import GuardContext

_logger = logging.getLogger(__name__)

NONE, REJECTED = -1, -2  # reviewed_label: not reviewed / rejected without a correction


class ReviewedLabels:
    """Per pool image: the class a reviewer vouched for (`label_`, or NONE / REJECTED) and the
    trial from which it counts (`since_`)."""

    name = "reviewed"

    def __init__(self, loop):
        self.label_ = np.zeros(0, np.int64)
        self.since_ = np.zeros(0, np.int64)

    def fit(self, ctx: GuardContext) -> None:
        n = len(ctx.data.pool)
        self.label_, self.since_ = np.full(n, NONE, np.int64), np.full(n, -1, np.int64)

    def apply(self, reviewed: dict[str, str | None], paths: list[str], classes: list[str], trial: int) -> None:
        """Take in a review: path -> the class a person gave (None: rejected without one). A verdict
        that changes an image's entry counts from `trial`; one already taken keeps its trial, so
        applying the same review again changes nothing."""
        index, position = {p: i for i, p in enumerate(paths)}, {c: k for k, c in enumerate(classes)}
        missing = [p for p in reviewed if p not in index]
        if missing:  # e.g. an exact copy of a human-labelled image, dropped from the pool
            _logger.warning("%d reviewed image(s) are not in the de-duplicated pool and are left out (first: %s)",
                            len(missing), missing[0])
        for path, label in reviewed.items():
            i = index.get(path)
            if i is None:
                continue
            value = REJECTED if label is None else position[label]
            if self.label_[i] != value:
                self.label_[i], self.since_[i] = value, trial

    def decide(self, accept: np.ndarray, guess: np.ndarray, conf: np.ndarray) -> np.ndarray:
        return accept & (self.label_ == NONE)

    def record(self, before: np.ndarray, after: np.ndarray) -> dict:
        if not (self.label_ != NONE).any():
            return {}  # runs without a review keep their records as they were
        return {"human_reviewed": int((self.label_ >= 0).sum()), "review_rejected": int((self.label_ == REJECTED).sum())}

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return {"reviewed_label": self.label_, "reviewed_since": self.since_}

    @property
    def excluded(self) -> np.ndarray:
        return self.label_ != NONE

    def state_dict(self) -> dict:
        """Sparse: only the reviewed images (a review touches a few hundred of a pool of millions)."""
        idx = np.flatnonzero(self.label_ != NONE)
        return {"n": len(self.label_), "index": idx.tolist(), "label": self.label_[idx].tolist(),
                "since": self.since_[idx].tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.label_, self.since_ = np.full(state["n"], NONE, np.int64), np.full(state["n"], -1, np.int64)
        idx = np.asarray(state["index"], np.int64)
        self.label_[idx] = state["label"]
        self.since_[idx] = state["since"]
