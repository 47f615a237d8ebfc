"""The out-of-class guard: a pool image further from every human label than the calibrated
threshold is never given a pseudo-label, whatever its confidence (embeddings/ood.py scores it).

It scores the pool once per run, in the pretrained backbone's space (in head mode the features
the head trains on, so no extra backbone pass), and keeps the scores as its per-image columns.
"""
from __future__ import annotations

import logging

import numpy as np

from autolabel import hooks
from autolabel.guards.base import GuardContext
from embeddings.features import Embedder
from embeddings.ood import KnnOOD

_logger = logging.getLogger(__name__)


class OutOfClassGuard:
    """Refuse pool images whose kNN distance to the human labels is over the threshold that keeps
    `ood_tpr` of the human labels (leave-one-out). Off (`ood_guard: false`): refuses nothing and
    scores nothing (NaN)."""

    name = "ood"

    def __init__(self, loop):
        self.enabled, self.k, self.tpr = loop.ood_guard, loop.ood_k, loop.ood_tpr
        self.summary_: dict | None = None       # {"k", "tpr", "threshold"} once fitted
        self.score_ = np.zeros(0, np.float32)   # (N,) distance to the k-th nearest human label
        self.refused_ = np.zeros(0, bool)       # (N,) over the threshold

    @property
    def threshold_(self) -> float:
        return self.summary_["threshold"]

    @property
    def k_(self) -> int:
        return self.summary_["k"]

    def fit(self, ctx: GuardContext) -> None:
        n = len(ctx.data.pool)
        self.score_, self.refused_ = np.full(n, np.nan, np.float32), np.zeros(n, bool)
        if not self.enabled or n == 0:
            return
        t = ctx.train
        embed = Embedder(t.model, weights=t.weights, img_size=t.img_size, cache=ctx.cache, runtime=t.runtime,
                         batch_size=t.batch_size, workers=t.workers, progress=ctx.progress)
        ref = embed(ctx.data.labeled)
        hooks.reached("extract", 0)
        detector = KnnOOD(self.k, self.tpr).fit(ref.feats[ref.ok])
        ok = np.zeros(n, bool)
        for rows, chunk in ctx.data.pool.chunks():  # one chunk of the pool's features in memory at a time
            pool = embed(chunk)
            ok[rows] = pool.ok
            self.score_[rows[pool.ok]] = detector.score(pool.feats[pool.ok])
        self.refused_ = ok & detector.refuse(np.nan_to_num(self.score_))
        self.summary_ = detector.state_dict()
        _logger.info("out-of-class guard: %d of %d pool images refused (threshold %.4f, k=%d)",
                     int(self.refused_.sum()), n, detector.threshold_, detector.k_)

    def decide(self, accept: np.ndarray, guess: np.ndarray, conf: np.ndarray) -> np.ndarray:
        return accept & ~self.refused_

    def record(self, before: np.ndarray, after: np.ndarray) -> dict:
        return {"refused_ood": int((before & self.refused_).sum())}

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return {"ood_score": self.score_, "ood_refused": self.refused_}

    @property
    def excluded(self) -> np.ndarray:
        return self.refused_

    def state_dict(self) -> dict:
        return {"summary": self.summary_, "score": self.score_, "refused": self.refused_}

    def load_state_dict(self, state: dict) -> None:
        self.summary_ = state["summary"]
        self.score_ = np.asarray(state["score"], np.float32)
        self.refused_ = np.asarray(state["refused"], bool)
