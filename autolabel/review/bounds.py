"""How precise the accepted labels are at least, from a uniform sample of them: the one-sided
Clopper-Pearson lower bound on a binomial proportion.

With n reviewed labels of which x are right, the bound p_lo at confidence 1 - alpha is the
alpha quantile of Beta(x, n - x + 1) (0 when x = 0): whatever the true precision p, the chance
that p_lo exceeds p is at most alpha. The sample is drawn without replacement from a finite set of
labels; the binomial bound is then conservative (the hypergeometric spread is smaller), so the
promise still holds.
"""
from __future__ import annotations

from scipy.stats import beta


def lower_bound(n: int, errors: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound on precision: n reviewed, `errors` of them wrong."""
    _check(n, errors, confidence)
    right = n - errors
    if right == 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, right, errors + 1))


def more_reviews(n: int, errors: int, target: float, confidence: float = 0.95) -> int | None:
    """How many more reviews, none of them an error, lift the bound to `target` (0: it already
    is; None: no number can, as for a target of 1)."""
    _check(n, errors, confidence)
    if not 0 < target < 1:
        return 0 if target <= 0 else None
    if lower_bound(n, errors, confidence) >= target:
        return 0
    hi = 1
    while lower_bound(n + hi, errors, confidence) < target:  # the bound rises with every clean review
        hi *= 2
    lo = hi // 2  # lower_bound(n + lo) < target <= lower_bound(n + hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if lower_bound(n + mid, errors, confidence) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def _check(n: int, errors: int, confidence: float) -> None:
    if not 0 <= errors <= n:
        raise ValueError(f"errors must be in [0, n]; got {errors} of {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
