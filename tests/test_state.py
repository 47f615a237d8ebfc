"""The loop's state as one object, guards as registered parts, the run's named points, and the
trial table at 80 columns."""
from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from autolabel import hooks
from autolabel.cli.report import COLUMNS, trial_table
from autolabel.config import LoopConfig
from autolabel.decision import decide
from autolabel.guards import GUARDS, create_guards
from autolabel.policies import create_policy
from autolabel.state import LoopData, LoopState
from classification.data import ImageSet
from classification.errors import InputError


def _data(n_pool: int = 6) -> LoopData:
    labeled = ImageSet([f"l{i}.jpg" for i in range(4)], [f"h{i}" for i in range(4)], np.array([0, 0, 1, 1]),
                       ["a", "b"])
    pool = ImageSet([f"u{i}.jpg" for i in range(n_pool)], [f"p{i}" for i in range(n_pool)],
                    np.full(n_pool, -1), ["a", "b"])
    return LoopData(labeled, pool, labeled.subset(np.arange(2)), labeled.subset(np.arange(2, 4)), None)


def test_state_round_trips_through_json_and_refuses_other_inputs():
    data = _data()
    state = LoopState.empty(data, seed=3, fingerprint="abc")
    state.apply(1, np.array([1, 0, 1, 0, 0, 1], bool), np.array([1, 0, 0, 1, 1, 0]),
                np.linspace(0.5, 1, 6), sticky=False)
    state.n_trials, state.history = 1, [{"trial": 1, "stop": None}]
    state.guards = {"ood": {"summary": None, "score": np.arange(6.0), "refused": np.zeros(6, bool)}}
    saved = state.to_json(finished=False, cache_dir="/c")
    back = LoopState.from_json(saved, data, "abc")
    assert back.labels.tolist() == [1, -1, 0, -1, -1, 0] and back.accepted_trial.tolist() == [1, -1, 1, -1, -1, 1]
    assert np.allclose(back.confidence, state.confidence) and back.n_trials == 1 and back.seed == 3
    assert back.guards["ood"]["score"] == list(range(6)) and saved["cache_dir"] == "/c"
    with pytest.raises(InputError, match="fingerprint mismatch"):
        LoopState.from_json(saved, data, "other")
    with pytest.raises(InputError, match="format"):
        LoopState.from_json({**saved, "format": 1}, data, "abc")


def test_sticky_labels_stay_and_re_decided_ones_can_go():
    state = LoopState.empty(_data(3), seed=0, fingerprint="x")
    state.apply(1, np.array([1, 1, 0], bool), np.array([0, 1, 1]), np.ones(3), sticky=True)
    state.apply(2, np.array([0, 1, 1], bool), np.array([1, 0, 1]), np.ones(3), sticky=True)
    assert state.labels.tolist() == [0, 1, 1] and state.accepted_trial.tolist() == [1, 1, 2]
    state.apply(3, np.array([0, 1, 0], bool), np.array([1, 0, 1]), np.ones(3), sticky=False)
    assert state.labels.tolist() == [-1, 0, -1] and state.accepted_trial.tolist() == [-1, 1, -1]


def test_guards_are_a_registry_with_saved_state():
    assert list(GUARDS) == ["reviewed", "ood", "balance"]
    with pytest.raises(InputError, match="valid: reviewed, ood, balance"):
        create_guards(LoopConfig(), ["ood", "typo"])
    ood, balance = create_guards(LoopConfig(balance=1.0), ["ood", "balance"])
    ood.load_state_dict({"summary": {"k": 5, "tpr": 0.95, "threshold": 0.5},
                         "score": [0.1, 0.9, 0.2, 0.3], "refused": [False, True, False, False]})
    balance.load_state_dict({"multiple": 1.0, "human_counts": [3, 1]})
    assert ood.threshold_ == 0.5 and ood.k_ == 5 and ood.excluded.tolist() == [False, True, False, False]
    again = create_guards(LoopConfig(), ["ood"])[0]
    again.load_state_dict(ood.state_dict())
    assert np.array_equal(again.columns["ood_score"], ood.columns["ood_score"])
    policy = create_policy("fixed", threshold=0.6, n_classes=2, n_unlabeled=4)
    probs = np.array([[0.9, 0.1], [0.95, 0.05], [0.7, 0.3], [0.2, 0.8]])
    decision, tau, notes = decide(probs, np.array([True, True, True, False]), policy, [ood, balance])
    # image 1 is refused as out-of-class, image 3 is undecodable; the cap (1.0 x 1/4 x 4 = 1) keeps
    # one class-1 image and three class-0 ones, so nothing else goes
    assert decision.accepted.tolist() == [True, False, True, False] and notes == {"refused_ood": 1}
    assert tau.tolist() == [0.6, 0.6] and decision.confidence[3] == 0.0


def test_named_points_reach_listeners_until_they_stop():
    seen = []
    stop = hooks.listen(lambda point, trial: seen.append((point, trial)))
    hooks.reached("commit", 2)
    stop()
    hooks.reached("commit", 3)
    assert seen == [("commit", 2)]


def test_trial_table_headers_are_whole_at_80_columns():
    trials = [{"trial": t, "accepted": 9750, "newly_accepted": 123, "dropped": 45, "refused_ood": 678,
               "coverage": 0.875, "val_accuracy": 0.625, "test_accuracy": 0.5875, "estimated_precision": 0.9437,
               "audit": {"precision": 0.6213}}
              for t in range(1, 11)]
    final = {"pseudo_labels": 9750, "pool": 9750, "refused_ood": 678, "test_accuracy": 0.6,
             "estimated_precision": 0.9, "audit": {"precision": 0.62}}
    out = io.StringIO()
    Console(file=out, width=80).print(trial_table({"trials": trials, "final": final}))
    text = out.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for word in " ".join(COLUMNS).split():
        assert word in text
    assert "62.1%" in text and "94.4%" in text and "final" in text
