"""Calibration, estimated precision and the target-precision bars, on constructed numbers."""
from __future__ import annotations

import numpy as np
import pytest

from autolabel.calibration import (NOTHING, estimated_precision, fit_temperature, label_scores, precision_bars,
                                   scale_probs, softmax)
from autolabel.config import LoopConfig
from autolabel.decision import decide
from autolabel.policies import create_policy
from classification.errors import InputError


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_fit_temperature_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 5))
    probs = softmax(logits, true_t)
    labels = (rng.random((len(probs), 1)) > probs.cumsum(1)).sum(1)  # drawn from softmax(z / T)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_scale_probs_keeps_the_argmax_and_undecodable_rows():
    probs = np.array([[0.7, 0.2, 0.1], [0.0, 0.0, 0.0], [0.2, 0.5, 0.3]], np.float32)
    sharp, soft = scale_probs(probs, 0.5), scale_probs(probs, 2.0)
    assert (sharp[1] == 0).all() and (soft[1] == 0).all()
    assert (sharp[[0, 2]].argmax(1) == [0, 1]).all() and (soft[[0, 2]].argmax(1) == [0, 1]).all()
    assert sharp[0, 0] > 0.7 > soft[0, 0]
    assert np.allclose(sharp[[0, 2]].sum(1), 1) and np.allclose(soft[[0, 2]].sum(1), 1)


def test_estimated_precision_is_the_mean_reference_probability_of_each_label():
    reference = np.array([[0.9, 0.1, 0.0], [0.3, 0.7, 0.0], [0.2, 0.6, 0.2], [0.99, 0.0, 0.01], [0.5, 0.5, 0.0]])
    labels = np.array([0, 0, 1, -1, -1])  # the second label disagrees with the reference's guess
    scores = label_scores(reference, labels)
    assert scores.tolist() == pytest.approx([0.9, 0.3, 0.6, 0.0, 0.0])
    overall, per = estimated_precision(scores, labels, 3)
    assert overall == pytest.approx((0.9 + 0.3 + 0.6) / 3)
    assert per[0] == pytest.approx(0.6) and per[1] == pytest.approx(0.6) and per[2] is None
    assert estimated_precision(scores, np.full(5, -1), 3) == (None, [None, None, None])


def _largest_prefix(conf: np.ndarray, target: float) -> int:
    """Brute force: the most images, taken by confidence, whose mean confidence is >= target."""
    ranked = np.sort(conf)[::-1]
    return max([k for k in range(len(ranked) + 1) if k == 0 or ranked[:k].mean() >= target])


def test_target_precision_accepts_the_largest_set_meeting_the_target():
    # class 0: running means 0.99, 0.97, 0.947, 0.8825 -> 3 images at 0.9; class 1: 0.85 alone fails
    probs = np.array([[0.99, 0.01], [0.95, 0.05], [0.90, 0.10], [0.70, 0.30], [0.15, 0.85], [0.4, 0.6]])
    ok = np.ones(len(probs), bool)
    policy = create_policy("growth", threshold=None, n_classes=2, n_unlabeled=len(probs), n_trials=1)
    decision, tau, _ = decide(probs, ok, policy, [], target_precision=0.9)
    assert decision.accepted.tolist() == [True, True, True, False, False, False]
    assert tau.tolist() == [0.90, NOTHING]
    # the same on random matrices, against brute force, per predicted class
    rng = np.random.default_rng(1)
    for _ in range(20):
        probs = rng.dirichlet(np.full(4, 0.4), 200)
        ok = rng.random(200) > 0.1
        conf, guess = probs.max(1), probs.argmax(1)
        bars = precision_bars(conf, conf, guess, ok, 0.8, 4)
        for c in range(4):
            members = ok & (guess == c)
            accepted = members & (conf >= bars[c])
            assert accepted.sum() == _largest_prefix(conf[members], 0.8)
            if accepted.any():
                assert conf[accepted].mean() >= 0.8


def test_target_precision_scores_guesses_by_the_reference_model():
    # ranked by the current head's confidence; the reference doubts the second image
    probs = np.array([[0.99, 0.01], [0.98, 0.02], [0.97, 0.03], [0.2, 0.8]])
    reference = np.array([[0.95, 0.05], [0.5, 0.5], [0.95, 0.05], [0.1, 0.9]])
    policy = create_policy("fixed", threshold=0.0, n_classes=2, n_unlabeled=4)
    decision, tau, _ = decide(probs, np.ones(4, bool), policy, [], target_precision=0.79, reference=reference)
    # class 0 running means of the reference's scores: 0.95, 0.725, 0.8 -> all three; class 1: 0.9
    assert decision.accepted.tolist() == [True, True, True, True]
    decision, tau, _ = decide(probs, np.ones(4, bool), policy, [], target_precision=0.85, reference=reference)
    assert decision.accepted.tolist() == [True, False, False, True] and tau[0] == 0.99


def test_growth_accepts_each_class_quota_growing_to_an_equal_share_of_the_pool():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3), 300)
    policy = create_policy("growth", threshold=None, n_classes=3, n_unlabeled=300, n_trials=3, start=0.1)
    ok = np.ones(300, bool)
    quotas = []
    for trial in range(3):
        decision, tau, _ = decide(probs, ok, policy, [])
        guess = probs.argmax(1)
        per_class = np.bincount(guess[decision.accepted], minlength=3)
        quotas.append(per_class)
        for c in range(3):  # the most confident of each predicted class
            members = np.flatnonzero(guess == c)
            kept = members[decision.accepted[members]]
            if len(kept) < len(members):
                assert probs.max(1)[kept].min() >= probs.max(1)[np.setdiff1d(members, kept)].max()
    counts = np.bincount(probs.argmax(1), minlength=3)
    assert (quotas[0] == np.minimum(10, counts)).all()  # 0.1 x 300 / 3
    assert (quotas[1] == np.minimum(55, counts)).all()  # 0.55 x 300 / 3
    assert (quotas[2] == np.minimum(100, counts)).all()  # an equal share: 300 / 3
    saved = policy.state_dict()
    again = create_policy("growth", threshold=None, n_classes=3, n_unlabeled=300, n_trials=3)
    again.load_state_dict(saved)
    assert again.trial == 3 and np.array_equal(again.thresholds(), policy.thresholds())


def test_threshold_and_target_precision_are_exclusive():
    with pytest.raises(InputError, match="--threshold and --target-precision are exclusive"):
        LoopConfig(threshold=0.8, target_precision=0.9)
    assert LoopConfig(target_precision=0.9).policy == "growth"
