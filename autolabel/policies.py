"""Threshold policies: which pseudo-labels to accept, given the pool's class probabilities.

Each policy is one small class with `update(probs)`, `thresholds() -> (C,)` and
`state_dict()/load_state_dict()`; its state is saved with the run. Register new ones in `POLICIES`.
`update` is called once per trial with the pool's (calibrated) probabilities, all-zero rows for
undecodable images; `autolabel.decision.decide` then accepts an image when its confidence reaches
its predicted class's threshold. A rule that selects by rank (`growth`) states its choice as the
per-class thresholds that make it, so the decision, the trial CSVs, the printed and the plotted
thresholds are the ones applied.

What `threshold` (tau, `--threshold`) means under each policy:
    fixed      the bar of every class; default 0.8
    flexmatch  the top of the class-wise bars: tau_c = tau * beta_c / (2 - beta_c), never below
               flex_floor * tau (0.4 with the defaults); default 0.8
    growth     a confidence floor under the rank bars (unset: none)
"""
from __future__ import annotations

import numpy as np

from classification.errors import InputError

DEFAULT_THRESHOLD = 0.8  # tau of fixed and flexmatch when none is given


class FixedThreshold:
    """Accept a prediction when its confidence is at least tau, for every class."""

    name = "fixed"

    def __init__(self, threshold: float | None, n_classes: int, n_unlabeled: int, **_):
        self.threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        self.n_classes = n_classes

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

    def __init__(self, threshold: float | None, n_classes: int, n_unlabeled: int, warmup: bool = True,
                 floor: float = 0.5, **_):
        self.threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        self.n_classes, self.warmup, self.floor = n_classes, warmup, floor
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


class ClassBalancedGrowth:
    """A curriculum: trial t accepts, in every predicted class, its most confident images up to a
    quota of r_t x (decodable pool) / C, r_t growing linearly from `start` at trial 1 to 1 at the
    last trial (`n_trials`): then every class may take an equal share, the whole pool when the
    classes are of equal size.

    Ranking within each class keeps the classes in step: a global confidence bar lets the few
    classes the head already knows swallow the pool while the hard ones get nothing, and the
    pseudo-labels then teach the head those few classes even better. Starting small gives the
    next trials' heads the labels that are most likely right first. The quota assumes classes of
    about equal size in the pool; the class-balance guard bounds them anyway.

    The choice is stated as thresholds: tau_c = the confidence of class c's last image within its
    quota (1.0 when nothing is predicted c), raised to `threshold` when one is given.
    """

    name = "growth"

    def __init__(self, threshold: float | None, n_classes: int, n_unlabeled: int, n_trials: int = 10,
                 start: float = 0.1, **_):
        self.floor = 0.0 if threshold is None else threshold
        self.n_classes, self.n_trials, self.start = n_classes, max(n_trials, 1), start
        self.trial = 0  # updates seen so far: the trial being decided
        self.bars = np.ones(n_classes)

    def fraction(self, trial: int) -> float:
        """r_t: the share of the pool accepted at `trial` (1-based)."""
        if self.n_trials <= 1:
            return 1.0
        return min(1.0, self.start + (1.0 - self.start) * (trial - 1) / (self.n_trials - 1))

    def update(self, probs: np.ndarray) -> None:
        assert probs.ndim == 2 and probs.shape[1] == self.n_classes, probs.shape
        self.trial += 1
        ok = probs.sum(axis=1) > 0
        conf, guess = probs.max(axis=1), probs.argmax(axis=1)
        quota = int(np.ceil(self.fraction(self.trial) * ok.sum() / self.n_classes))
        bars = np.ones(self.n_classes)
        for c in range(self.n_classes):
            ranked = np.sort(conf[ok & (guess == c)])[::-1]
            if len(ranked) and quota > 0:
                bars[c] = ranked[min(quota, len(ranked)) - 1]
        self.bars = np.maximum(bars, self.floor)

    def thresholds(self) -> np.ndarray:
        return self.bars.copy()

    def state_dict(self) -> dict:
        return {"floor": self.floor, "n_trials": self.n_trials, "start": self.start, "trial": self.trial,
                "bars": self.bars.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.floor, self.n_trials, self.start = state["floor"], state["n_trials"], state["start"]
        self.trial, self.bars = state["trial"], np.asarray(state["bars"], float)


POLICIES = {"fixed": FixedThreshold, "flexmatch": FlexMatchThreshold, "growth": ClassBalancedGrowth}


def create_policy(name: str, **kwargs):
    if name not in POLICIES:
        raise InputError(f"unknown policy {name!r}; valid: {', '.join(POLICIES)}")
    return POLICIES[name](**kwargs)
