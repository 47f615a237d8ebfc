"""Guards applied after the threshold policy. Each takes the accept mask and returns a subset."""
from __future__ import annotations

import numpy as np


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
