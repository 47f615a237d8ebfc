"""The loop's per-image decision, in one place: from a trial's (calibrated) predictions over the
pool to what is accepted, through the threshold policy, the target precision's bars, and then
every guard in order."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autolabel.calibration import label_scores, precision_bars


@dataclass
class Decision:
    """One trial's verdict on every pool image, all (N,)."""
    guess: np.ndarray        # predicted class
    confidence: np.ndarray   # its probability (0 for an undecodable image)
    threshold: np.ndarray    # the bar the image had to pass (its class's threshold)
    ok: np.ndarray           # decodable
    accepted: np.ndarray     # passed the policy and every guard


def decide(probs: np.ndarray, ok: np.ndarray, policy, guards: list, target_precision: float | None = None,
           reference: np.ndarray | None = None) -> tuple[Decision, np.ndarray, dict]:
    """Apply `policy` (updated with this trial's `probs` first), then, with `target_precision`,
    raise each class's threshold to the bar that keeps the class's estimated precision at least
    that (`calibration.precision_bars`; each guess scored by the `reference` probabilities, or by
    its own confidence without them), then each guard.

    Returns the decision, the per-class thresholds applied (C,), and what the guards add to the
    trial's record (for example how many confident predictions the out-of-class guard refused).
    """
    probs = np.where(ok[:, None], probs, 0.0)
    conf, guess = probs.max(axis=1), probs.argmax(axis=1)
    policy.update(probs)
    tau = policy.thresholds()
    if target_precision is not None:
        scores = conf if reference is None else label_scores(reference, np.where(ok, guess, -1))
        tau = np.maximum(tau, precision_bars(conf, scores, guess, ok, target_precision, len(tau)))
    accept = ok & (conf >= tau[guess])
    notes: dict = {}
    for guard in guards:
        kept = guard.decide(accept, guess, conf)
        notes.update(guard.record(accept, kept))
        accept = kept
    return Decision(guess, conf, tau[guess], ok, accept), tau, notes
