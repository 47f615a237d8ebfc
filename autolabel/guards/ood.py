"""The out-of-class guard: a pool image that the fused out-of-class rule refuses (far from every
human label, or unlike every labelled class, or like an image marked "none of these classes") is
never given a pseudo-label, whatever its confidence (`embeddings.fusion` scores it).

It scores the pool once per run, in the pretrained backbone's space (in head mode the features
the head trains on, so no extra backbone pass), and keeps the scores as its per-image columns:
`ood_score` (the fused score), `ood_refused`, and each part's own score (`ood_knn`, `ood_near`,
`ood_other`).
"""
from __future__ import annotations

import logging

import numpy as np

from autolabel import hooks
from autolabel.guards.base import GuardContext
from embeddings.features import Embedder
from embeddings.fusion import fit_ood

_logger = logging.getLogger(__name__)
SAMPLE = 20_000  # pool images the near score's whitening is fitted on, at most (evenly spaced)


class OutOfClassGuard:
    """Refuse pool images the fused rule refuses; its threshold keeps `ood_tpr` of the held-out
    human labels. `ood_score: knn` keeps the kNN distance alone. Off (`ood_guard: false`): refuses
    nothing and scores nothing (NaN)."""

    name = "ood"

    def __init__(self, loop):
        self.enabled, self.k, self.tpr = loop.ood_guard, loop.ood_k, loop.ood_tpr
        self.near, self.dim = loop.ood_score == "fused", loop.ood_dim
        self.summary_: dict | None = None          # OODModel.summary() once fitted
        self.parts_: dict[str, np.ndarray] = {}    # (N,) per part: knn, near, other
        self.score_ = np.zeros(0, np.float32)      # (N,) the fused score
        self.refused_ = np.zeros(0, bool)          # (N,) refused by the rule

    @property
    def threshold_(self) -> float:
        return self.summary_["threshold"]

    @property
    def k_(self) -> int:
        return self.summary_["k"]

    def fit(self, ctx: GuardContext) -> None:
        n = len(ctx.data.pool)
        self.score_, self.refused_, self.parts_ = np.full(n, np.nan, np.float32), np.zeros(n, bool), {}
        if not self.enabled or n == 0:
            return
        embed = _embedder(ctx)
        model = self._fit_model(embed, ctx.data)
        for rows, chunk in ctx.data.pool.chunks():  # one chunk of the pool's features in memory at a time
            pool = embed(chunk)
            scored = model.score(pool.feats[pool.ok])
            for key, values in scored.items():
                target = {"score": self.score_, "refused": self.refused_}.get(key)
                if target is None:
                    target = self.parts_.setdefault(key, np.full(n, np.nan, np.float32))
                target[rows[pool.ok]] = values
        self.summary_ = model.summary()
        _logger.info("out-of-class guard (%s): %d of %d pool images refused (fused threshold %.4f, k=%d)",
                     "+".join(self.summary_["parts"]), int(self.refused_.sum()), n, model.threshold, model.knn.k_)

    def _fit_model(self, embed, data):
        ref = embed(data.labeled)
        hooks.reached("extract", 0)
        step = -(-len(data.pool) // SAMPLE)
        sample = embed(data.pool.subset(np.arange(0, len(data.pool), step)))
        other = embed(data.other) if data.other is not None and len(data.other) else None
        return fit_ood(ref.feats[ref.ok], data.labeled.labels[ref.ok], sample.feats[sample.ok],
                       None if other is None else other.feats[other.ok],
                       k=self.k, tpr=self.tpr, near=self.near, dim=self.dim)

    def decide(self, accept: np.ndarray, guess: np.ndarray, conf: np.ndarray) -> np.ndarray:
        return accept & ~self.refused_

    def record(self, before: np.ndarray, after: np.ndarray) -> dict:
        return {"refused_ood": int((before & self.refused_).sum())}

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return {"ood_score": self.score_, "ood_refused": self.refused_,
                **{f"ood_{k}": v for k, v in self.parts_.items()}}

    @property
    def excluded(self) -> np.ndarray:
        return self.refused_

    def state_dict(self) -> dict:
        return {"summary": self.summary_, "score": self.score_, "refused": self.refused_, "parts": self.parts_}

    def load_state_dict(self, state: dict) -> None:
        self.summary_ = state["summary"]
        self.score_ = np.asarray(state["score"], np.float32)
        self.refused_ = np.asarray(state["refused"], bool)
        self.parts_ = {k: np.asarray(v, np.float32) for k, v in state.get("parts", {}).items()}


def _embedder(ctx: GuardContext) -> Embedder:
    t = ctx.train
    return Embedder(t.model, weights=t.weights, img_size=t.img_size, cache=ctx.cache, runtime=t.runtime,
                    batch_size=t.batch_size, workers=t.workers, progress=ctx.progress)
