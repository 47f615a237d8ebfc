"""What the index benchmarks share (bench_index.py and bench_index_scale.py, which it runs with
--scale): where results go, the neighbour and query counts, the synthetic Gaussian mixture and
the best-of-n timer."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
K = 10              # neighbours searched per query (1-recall@10 is measured on them)
N_QUERIES = 1000    # held-out mixture points searched as one batch
CENTRES = 1000      # mixture centres on the unit sphere


def best_time(fn, repeats: int = 3):
    """(best seconds, last result): the minimum is the least disturbed by other load on the machine."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def fill_mixture(out: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Fill (n, d) `out` (an array or a np.memmap) with the mixture, 100,000 rows at a time: centres
    drawn on the unit sphere of dimension d, each row = a centre + N(0, sigma^2 I), L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, out.shape[1]), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for s in range(0, len(out), 100_000):
        e = min(len(out), s + 100_000)
        block = centres[rng.integers(0, CENTRES, e - s)]
        block += sigma * rng.standard_normal((e - s, out.shape[1]), dtype=np.float32)
        out[s:e] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out
