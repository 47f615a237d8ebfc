"""The autolabel loop on the bundled sample: invariants, stopping, determinism, honest audit."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from autolabel.audit import audit, load_truth
from autolabel.cli import main
from autolabel.config import LoopConfig
from autolabel.loop import NOTHING_MORE, PseudoLabeler
from autolabel.outputs import RunWriter, dataset_frame
from classification.config import TrainConfig
from classification.data import load_labeled, load_unlabeled
from classification.engine import fit
from classification.inference import predict

TRAIN = TrainConfig(img_size=128, n_views=2)


@pytest.fixture(scope="module")
def sets(sample):
    return load_labeled(sample / "labeled"), load_unlabeled(sample / "unlabeled"), load_labeled(sample / "test")


def _loop(sets, cache, callbacks=(), **kw):
    lb, ulb, test = sets
    loop = LoopConfig(**{"n_trials": 3, "threshold": 0.5, **kw})
    return PseudoLabeler(loop, TRAIN, cache, callbacks=list(callbacks)).fit(lb, ulb, test=test)


@pytest.fixture(scope="module")
def fitted(sets, cache):
    return _loop(sets, cache)


def test_zero_trials_equals_supervised_only(sets, cache):
    lb, _, test = sets
    labeler = _loop(sets, cache, n_trials=0)
    assert labeler.n_trials_ == 0 and (labeler.pseudo_labels_ == -1).all()
    from classification.data import stratified_split
    tr, va = stratified_split(lb.labels, TRAIN.val_fraction, TRAIN.seed)
    plain = fit(TRAIN, lb.subset(tr), lb.subset(va), cache)
    a = predict(labeler.model_.model, test, plain.data_cfg, cache).probs
    b = predict(plain.model, test, plain.data_cfg, cache).probs
    assert np.array_equal(a, b)


def test_human_labels_never_change(fitted, sets):
    lb = sets[0]
    frame = dataset_frame(fitted.state_)
    human = frame[frame.source == "human"]
    assert human.path.tolist() == lb.paths
    assert human.label.tolist() == [lb.classes[y] for y in lb.labels]
    assert (fitted.labeled_trial_[: len(lb)] == 0).all()


def test_loop_accepts_and_records_trials(fitted):
    assert fitted.n_trials_ >= 1 and (fitted.pseudo_labels_ >= 0).sum() > 0
    acc = fitted.pseudo_labels_ >= 0
    assert ((fitted.accepted_trial_ >= 1) == acc).all()
    assert fitted.termination_reason_ in ("max_trials", "nothing_new", "no_change", "all_labeled")
    assert all(r["test_accuracy"] is not None for r in fitted.history_)


def test_threshold_one_stops_with_nothing_more_to_label(sample, tmp_path, cache_dir, capsys):
    code = main(["--quiet", "--n-trials", "5", "--threshold", "1.0", "--policy", "fixed", "--img-size", "128",
                 "--out", str(tmp_path / "run"), "--cache-dir", str(cache_dir)])
    out = capsys.readouterr().out
    assert code == 0 and NOTHING_MORE in out and "stopped: nothing_new" in out
    frame = pd.read_csv(tmp_path / "run" / "dataset.csv")
    assert (frame.source == "human").all() and len(frame) == 40


def test_same_seed_same_dataset_csv(sets, cache, tmp_path, fitted):
    again = _loop(sets, cache)
    assert dataset_frame(again.state_).equals(dataset_frame(fitted.state_))


def test_shuffled_truth_changes_no_accepted_label(sets, cache, sample, tmp_path):
    truth = pd.read_csv(sample / "unlabeled_truth.csv")
    shuffled = truth.assign(label=truth.label.sample(frac=1, random_state=0).values)
    runs = []
    for name, frame in (("truth", truth), ("shuffled", shuffled)):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        idx = load_truth(tmp_path / f"{name}.csv", sets[1], sets[0].classes)
        runs.append(_loop(sets, cache, callbacks=[RunWriter(tmp_path / name, {}, truth=idx)]))
    assert np.array_equal(runs[0].pseudo_labels_, runs[1].pseudo_labels_)
    assert (tmp_path / "truth" / "metrics.json").read_text() != (tmp_path / "shuffled" / "metrics.json").read_text()


def test_audit_counts_precision_and_coverage():
    pseudo = np.array([0, 1, -1, 1, 0])
    truth = np.array([0, 0, 1, 1, -1])
    out = audit(pseudo, truth, ["a", "b"])
    assert out["precision"] == pytest.approx(2 / 3) and out["coverage"] == pytest.approx(3 / 4)
    assert out["per_class"]["b"] == {"precision": 0.5, "coverage": 0.5}


def test_sticky_keeps_accepted_labels(sets, cache):
    labeler = _loop(sets, cache, sticky=True)
    for r in labeler.history_:
        assert r["dropped"] == 0


@pytest.mark.slow
def test_default_command_runs_on_the_bundled_sample(tmp_path, monkeypatch, cache_dir, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOLABEL_CACHE", str(cache_dir))
    assert main([]) == 0
    out = capsys.readouterr().out
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and "stopped:" in out
    names = {p.name for p in runs[0].iterdir()}
    assert {"dataset.csv", "metrics.json", "state.json", "checkpoint", "trials", "config.yaml"} <= names
    # the invariant the loop exists for: its final model beats trial 1's (trained on human labels only)
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["final"]["test_accuracy"] > metrics["trials"][0]["test_accuracy"]
    assert all(0 < r["estimated_precision"] <= 1 for r in metrics["trials"])
    assert 0 < metrics["final"]["estimated_precision"] <= 1


def test_metrics_json_has_the_estimated_precision_of_every_trial_and_the_final_set(fitted, tmp_path):
    RunWriter(tmp_path, {}).finish(fitted.state_)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    classes = fitted.classes_
    for r in metrics["trials"]:
        assert 0 < r["estimated_precision"] <= 1 and r["temperature"] > 0
        assert set(r["estimated_precision_per_class"]) == set(classes)
    # each label scored by trial 1's calibrated head (human labels only): its chance of being right
    labels, reference = fitted.pseudo_labels_, fitted.state_.reference
    scores = reference[np.arange(len(labels)), np.maximum(labels, 0)]
    final = metrics["final"]
    assert final["estimated_precision"] == pytest.approx(float(scores[labels >= 0].mean()))
    for c, name in enumerate(classes):
        expected = float(scores[labels == c].mean()) if (labels == c).any() else None
        assert final["estimated_precision_per_class"][name] == pytest.approx(expected)
    assert final["estimated_precision"] == metrics["trials"][-1]["estimated_precision"]


def test_threshold_with_target_precision_is_a_one_line_usage_error(tmp_path, cache_dir, capsys):
    code = main(["--threshold", "0.8", "--target-precision", "0.9", "--out", str(tmp_path / "run"),
                 "--cache-dir", str(cache_dir), "--no-mlflow"])
    err = capsys.readouterr().err
    assert code == 2 and "--threshold and --target-precision are exclusive" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bundled_config_resolves_and_unknown_keys_are_refused(tmp_path):
    from autolabel.settings import resolve_configs
    from tests.conftest import REPO

    train, loop = resolve_configs(REPO / "configs" / "default.yaml", {"seed": 3}, {"n_trials": 2})
    assert train.mode == "head" and train.seed == 3 and loop.policy == "growth" and loop.n_trials == 2
    assert loop.threshold is None and loop.target_precision is None and loop.calibration == "cv"
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop:\n  treshold: 0.9\n")
    from classification.errors import InputError
    with pytest.raises(InputError, match="unknown loop key.*treshold.*valid:.*threshold"):
        resolve_configs(bad, {}, {})


def test_ood_guard_refuses_digits_mixed_into_the_pool(sets, cache, sample):
    lb, ulb, test = sets
    pool = ulb.concat(load_unlabeled(sample / "ood_mnist"))
    loop = LoopConfig(n_trials=1, threshold=0.5, policy="flexmatch", calibration="none")
    labeler = PseudoLabeler(loop, TRAIN, cache).fit(lb, pool, test=test)
    digit = np.array(["ood_mnist" in p for p in labeler.unlabeled_.paths])
    assert digit.sum() == 20
    assert labeler.ood_refused_[digit].mean() >= 0.6 and labeler.ood_refused_[~digit].mean() <= 0.15
    assert (labeler.pseudo_labels_[labeler.ood_refused_] == -1).all()
    assert labeler.history_[0]["refused_ood"] <= labeler.ood_refused_.sum()
    frame = dataset_frame(labeler.state_)
    pseudo = frame[frame.source == "pseudo"]
    assert pseudo.ood_score.notna().all() and (pseudo.ood_score <= labeler.ood_.threshold_).all()
    off = PseudoLabeler(LoopConfig(n_trials=1, threshold=0.5, policy="flexmatch", calibration="none",
                                   ood_guard=False), TRAIN,
                        cache).fit(lb, pool)
    assert not off.ood_refused_.any() and np.isnan(off.ood_score_).all()
    assert (off.pseudo_labels_[digit] >= 0).any()  # without the guard some digits get a class


def test_the_thresholds_written_are_the_ones_applied(fitted):
    from autolabel.outputs import trial_frame

    frame = trial_frame(fitted.state_)
    record = fitted.history_[-1]
    classes = fitted.classes_
    passed = (frame.confidence >= frame.threshold) & (frame.prediction != "") & ~frame.ood_refused
    assert (frame.accepted == passed).all()
    bars = frame.prediction.map(record["thresholds"])
    assert np.allclose(frame.threshold[frame.prediction != ""], bars[frame.prediction != ""])
    assert set(record["thresholds"]) == set(classes)


@pytest.mark.parametrize("weighted", [True, False])
def test_pseudo_labels_weigh_their_calibrated_confidence_in_the_loss(sets, cache, monkeypatch, weighted):
    import autolabel.loop as loop_module
    seen = []

    def spy(*args, **kw):  # the real fit, recording the weights it was given
        seen.append((args[1], kw["strong"], kw["sample_weight"]))
        return fit(*args, **kw)

    fit = loop_module.fit
    monkeypatch.setattr(loop_module, "fit", spy)
    labeler = _loop(sets, cache, n_trials=1, confidence_weight=weighted)
    train, strong, weight = seen[-1]  # the final fit: human labels, then the accepted pseudo-labels
    acc = labeler.state_.accepted
    assert strong.sum() == len(acc) > 0 and (weight[~strong] == 1).all()
    expected = labeler.state_.confidence[acc] if weighted else np.ones(len(acc))
    np.testing.assert_allclose(weight[strong], expected, rtol=1e-6)
    assert weighted == (weight[strong] < 1).any()
