"""Threshold policies and guards on hand-made numbers."""
from __future__ import annotations

import numpy as np
import pytest

from autolabel.guards import balance_cap
from autolabel.policies import POLICIES, FlexMatchThreshold, create_policy
from classification.errors import InputError


def test_fixed_is_tau_for_every_class():
    pol = create_policy("fixed", threshold=0.8, n_classes=3, n_unlabeled=5)
    assert pol.thresholds().tolist() == [0.8, 0.8, 0.8]


def test_flexmatch_matches_its_formula_with_warmup_and_floor():
    tau = 0.9
    pol = FlexMatchThreshold(tau, n_classes=3, n_unlabeled=10, warmup=True, floor=0.0)
    # 4 images confidently class 0, 2 confidently class 1, 1 unconfident, 3 never seen confidently
    probs = np.array([[0.95, 0.03, 0.02]] * 4 + [[0.02, 0.95, 0.03]] * 2 + [[0.5, 0.3, 0.2]] * 4)
    pol.update(probs)
    counts, unused = np.array([4, 2, 0]), 4
    beta = counts / max(counts.max(), unused)  # warm-up: the unused bucket is the largest
    assert np.allclose(pol.learning_status(), beta)
    assert np.allclose(pol.thresholds(), tau * beta / (2 - beta))
    assert pol.thresholds()[2] == 0.0  # the unbounded formula would accept anything for class 2

    bounded = FlexMatchThreshold(tau, n_classes=3, n_unlabeled=10, warmup=True, floor=0.5)
    bounded.update(probs)
    assert np.allclose(bounded.thresholds(), np.maximum(tau * beta / (2 - beta), 0.45))


def test_flexmatch_without_warmup_and_before_any_confident_prediction():
    pol = FlexMatchThreshold(0.9, n_classes=2, n_unlabeled=4, warmup=False, floor=0.5)
    assert np.allclose(pol.thresholds(), [0.45, 0.45])  # nothing selected yet: beta = 0, floor holds
    pol.update(np.array([[0.95, 0.05], [0.92, 0.08], [0.1, 0.9], [0.5, 0.5]]))
    beta = np.array([2, 1]) / 2  # two confident class-0 images, one class-1 (0.9 >= tau)
    assert np.allclose(pol.thresholds(), np.maximum(0.9 * beta / (2 - beta), 0.45))


def test_flexmatch_state_round_trip():
    pol = FlexMatchThreshold(0.8, n_classes=2, n_unlabeled=3)
    pol.update(np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]))
    again = FlexMatchThreshold(0.5, n_classes=2, n_unlabeled=3)
    again.load_state_dict(pol.state_dict())
    assert np.allclose(again.thresholds(), pol.thresholds())


def test_unknown_policy_lists_the_valid_ones():
    with pytest.raises(InputError, match="valid: " + ", ".join(POLICIES)):
        create_policy("softmatch", threshold=0.8, n_classes=2, n_unlabeled=1)


def test_balance_guard_caps_a_dominant_class():
    n = 100
    pred = np.zeros(n, int)
    pred[90:] = 1  # the model calls 90% of the pool class 0
    conf = np.linspace(0.5, 1.0, n)
    accept = np.ones(n, bool)
    out = balance_cap(accept, pred, conf, human_counts=np.array([5, 5]), multiple=1.2)
    assert out[pred == 0].sum() == 60  # 1.2 x 50% x 100
    assert out[pred == 1].sum() == 10  # under its cap: untouched
    kept = np.flatnonzero(out & (pred == 0))
    assert conf[kept].min() >= conf[(pred == 0) & ~out].max()  # the most confident are kept
    assert np.array_equal(balance_cap(accept, pred, conf, np.array([5, 5]), 0), accept)
