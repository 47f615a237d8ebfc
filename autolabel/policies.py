"""Threshold policies: which pseudo-labels to accept, given the pool's class probabilities.

Each policy is one small class with `update(probs)`, `thresholds() -> (C,)` and
`state_dict()/load_state_dict()`; its state is saved with the run. Register new ones in `POLICIES`.
"""
from __future__ import annotations

import numpy as np

from classification.errors import InputError


class FixedThreshold:
    """Accept a prediction when its confidence is at least tau, for every class."""

    name = "fixed"

    def __init__(self, threshold: float, n_classes: int, n_unlabeled: int, **_):
        self.threshold, self.n_classes = threshold, n_classes

    def update(self, probs: np.ndarray) -> None:
        pass

    def thresholds(self) -> np.ndarray:
        return np.full(self.n_classes, self.threshold)

    def state_dict(self) -> dict:
        return {"threshold": self.threshold}

    def load_state_dict(self, state: dict) -> None:
        self.threshold = state["threshold"]


class FlexMatchThreshold:
    """FlexMatch's class-wise thresholds tau_c = tau * beta_c / (2 - beta_c) (convex mapping).

    beta_c, class c's learning status, counts the pool images whose latest confident prediction
    (confidence >= tau) is c, divided by the largest class count, or, with warm-up, by the number
    of images never yet predicted confidently when that is larger (as USB's `thresh_warmup`).

    FlexMatch updates per batch over ~10^6 steps, so its warm-up (every tau_c near 0 at first)
    lasts a few hundred steps. An offline loop has ~10 updates, and there the warm-up would accept
    every prediction at trial 1. So tau_c is bounded below by `floor * tau`: a class that is
    still learning gets a lower bar, never no bar. `floor=0` gives the unbounded formula.
    """

    name = "flexmatch"

    def __init__(self, threshold: float, n_classes: int, n_unlabeled: int, warmup: bool = True,
                 floor: float = 0.5, **_):
        self.threshold, self.n_classes, self.warmup, self.floor = threshold, n_classes, warmup, floor
        self.selected = np.full(n_unlabeled, -1, np.int64)  # latest confident class, -1 = unused

    def update(self, probs: np.ndarray) -> None:
        assert probs.shape == (len(self.selected), self.n_classes), probs.shape
        conf, pred = probs.max(axis=1), probs.argmax(axis=1)
        over = conf >= self.threshold  # FlexMatch counts with the fixed tau, not tau_c
        self.selected[over] = pred[over]

    def learning_status(self) -> np.ndarray:
        counts = np.bincount(self.selected[self.selected >= 0], minlength=self.n_classes).astype(float)
        denom = counts.max()
        if self.warmup:
            denom = max(denom, float((self.selected < 0).sum()))
        return counts / denom if denom > 0 else np.zeros(self.n_classes)

    def thresholds(self) -> np.ndarray:
        beta = self.learning_status()
        flexible = self.threshold * beta / (2.0 - beta)
        return np.maximum(flexible, self.floor * self.threshold)

    def state_dict(self) -> dict:
        return {"threshold": self.threshold, "warmup": self.warmup, "floor": self.floor,
                "selected": self.selected.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.threshold, self.warmup, self.floor = state["threshold"], state["warmup"], state["floor"]
        self.selected = np.asarray(state["selected"], np.int64)


POLICIES = {"fixed": FixedThreshold, "flexmatch": FlexMatchThreshold}


def create_policy(name: str, **kwargs):
    if name not in POLICIES:
        raise InputError(f"unknown policy {name!r}; valid: {', '.join(POLICIES)}")
    return POLICIES[name](**kwargs)
