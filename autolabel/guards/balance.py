"""The class-balance cap: no class grows far beyond its share of the human labels."""
from __future__ import annotations

import numpy as np

from autolabel.guards.base import GuardContext


class BalanceCap:
    """Keep at most `balance` x (class share of the human labels) x (pool size) pseudo-labels per
    class, the most confident first (see `balance_cap`); `balance` <= 0 turns the cap off."""

    name = "balance"

    def __init__(self, loop):
        self.multiple = loop.balance
        self.human_counts_: np.ndarray | None = None

    def fit(self, ctx: GuardContext) -> None:
        self.human_counts_ = ctx.data.human_counts

    def decide(self, accept: np.ndarray, guess: np.ndarray, conf: np.ndarray) -> np.ndarray:
        return balance_cap(accept, guess, conf, self.human_counts_, self.multiple)

    def record(self, before: np.ndarray, after: np.ndarray) -> dict:
        return {}

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return {}

    @property
    def excluded(self) -> bool:
        return False  # a capped image may pass in a later trial

    def state_dict(self) -> dict:
        counts = None if self.human_counts_ is None else self.human_counts_.tolist()
        return {"multiple": self.multiple, "human_counts": counts}

    def load_state_dict(self, state: dict) -> None:
        self.multiple = state["multiple"]
        counts = state["human_counts"]
        self.human_counts_ = None if counts is None else np.asarray(counts, np.int64)


def balance_cap(accept: np.ndarray, pred: np.ndarray, conf: np.ndarray, human_counts: np.ndarray,
                multiple: float) -> np.ndarray:
    """Keep at most `multiple` x (class share of the human labels) x (pool size) pseudo-labels per
    class, the most confident first. Without it a few easy classes swallow the pool, which in
    low-label regimes drags the others down.

    Args:
        accept: bool (N,), what the policy accepted.
        pred, conf: (N,) predicted class and its confidence.
        human_counts: (C,) human labels per class.
        multiple: the cap, as a multiple of the expected count; <= 0 disables the guard.
    """
    if multiple <= 0:
        return accept
    share = human_counts / max(human_counts.sum(), 1)
    caps = np.ceil(multiple * share * len(accept)).astype(int)
    out = accept.copy()
    for c in range(len(human_counts)):
        idx = np.flatnonzero(accept & (pred == c))
        if len(idx) > caps[c]:
            ranked = idx[np.argsort(-conf[idx], kind="stable")]
            out[ranked[caps[c]:]] = False
    return out
