"""Guards: what the loop applies after the threshold policy, each able to refuse pseudo-labels
the policy accepted. A guard is one small class with

    fit(ctx: GuardContext)            once per run, before the first trial
    decide(accept, guess, conf)       the trial's accept mask -> the subset it lets through
    record(before, after) -> dict     what the trial's record says about it (may be empty)
    columns -> {name: (N,) array}     per-image outputs written beside the labels (may be empty)
    excluded -> (N,) bool or False    images it will never let through, whatever the trial
    state_dict() / load_state_dict()  saved with every trial, restored by --resume

Guards run in the order of `GUARDS`; adding one is one class plus one line here.
"""
from __future__ import annotations

from autolabel.guards.balance import BalanceCap, balance_cap
from autolabel.guards.base import GuardContext
from autolabel.guards.ood import OutOfClassGuard
from autolabel.guards.reviewed import ReviewedLabels
from classification.errors import InputError

GUARDS = {"reviewed": ReviewedLabels, "ood": OutOfClassGuard, "balance": BalanceCap}

__all__ = ["GUARDS", "GuardContext", "balance_cap", "create_guards"]


def create_guards(loop, names=None) -> list:
    """The guards named (default: all of `GUARDS`, in order), built from the loop's settings."""
    names = list(GUARDS) if names is None else list(names)
    unknown = [n for n in names if n not in GUARDS]
    if unknown:
        raise InputError(f"unknown guard {unknown[0]!r}; valid: {', '.join(GUARDS)}")
    return [GUARDS[n](loop) for n in names]
