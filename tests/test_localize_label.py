"""`autolabel localize label`: the pseudo-box loop on the bundled box sample, end to end through the
console entry point (accepts, records, audits against --truth), accepted images feeding the next
trial, and one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autolabel.cli import main
from classification.cache import FeatureCache
from classification.data import load_unlabeled
from localization import labeling
from localization.boxes import box_iou
from localization.config import LocalizeConfig
from localization.data import load_boxes, pool_set
from localization.labeling import LabelSpec, label_pool

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "boxes_sample"
TINY = {"version": "tiny-label", "model": {"img_size": 64}, "augmentation": {"views": 2},
        "training": {"head_epochs": 3, "unfreeze": 0, "workers": 0, "val_fraction": 0.0}}


def test_label_accepts_records_and_audits(tmp_path, cache_dir, capsys):
    (tmp_path / "tiny.yaml").write_text(json.dumps(TINY))  # JSON is YAML
    code = main(["--quiet", "--no-mlflow", "localize", "label", "--data", str(SAMPLE / "labels.csv"), "--data-raw",
                 str(SAMPLE / "images"), "--truth", str(SAMPLE / "test.csv"), "--n-trials", "2", "--threshold", "0",
                 "--out", str(tmp_path / "out"), "--config", str(tmp_path / "tiny.yaml"), "--cache-dir", str(cache_dir)])
    out = capsys.readouterr().out
    assert code == 0 and "accepted 12 of 12 pool images in 1 trial(s)" in out  # the pool is used up
    frame = pd.read_csv(tmp_path / "out" / "dataset.csv")
    assert list(frame.columns) == ["path", "label", "x0", "y0", "x1", "y1", "source", "confidence", "trial"]
    human, pseudo = frame[frame.source == "human"], frame[frame.source == "pseudo"]
    assert len(human) == 36 and (human.trial == 0).all() and (human.confidence == 1).all()
    assert len(pseudo) == 12 and (pseudo.trial == 1).all() and pseudo.confidence.between(0, 1).all()
    truth = pd.read_csv(SAMPLE / "test.csv").assign(path=lambda f: [str(SAMPLE / p) for p in f.path])
    both = pseudo.merge(truth, on="path", suffixes=("", "_true"))
    assert len(both) == 12
    iou = box_iou(both[["x0", "y0", "x1", "y1"]].to_numpy(), both[["x0_true", "y0_true", "x1_true", "y1_true"]].to_numpy())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    final = metrics["final"]
    assert final["n_accepted"] == 12 and final["n_audited"] == 12
    assert final["class_precision"] == pytest.approx((both.label == both.label_true).mean())
    assert final["mean_iou"] == pytest.approx(iou.mean(), abs=1e-3)  # dataset.csv rounds to 0.01 px
    assert (tmp_path / "out" / "model" / "model.pt").is_file()
    trial = pd.read_csv(tmp_path / "out" / "trials" / "trial_01.csv")
    assert list(trial.columns) == ["path", "label", "x0", "y0", "x1", "y1", "confidence", "agreement", "decision"]
    assert len(trial) == 12 and (trial.decision == "accepted").all() and trial.agreement.between(0, 1).all()
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert state["trial"] == 1 and state["finished"] and "trials/trial_01.csv" in state["outputs"]


def test_accepted_boxes_train_the_next_trial(cache_dir, monkeypatch):
    """With a rule that accepts one new image per trial, trial 2 trains on it and it keeps its trial."""
    real = labeling.propose

    def one_at_a_time(probs, boxes, ok, rule):
        prop = real(probs, boxes, ok, labeling.BoxRule(0.0, 0.0))
        prop.accepted = np.zeros_like(prop.accepted)
        prop.accepted[[len(seen)]] = True
        seen.append(1)
        return prop

    seen = []
    monkeypatch.setattr(labeling, "propose", one_at_a_time)
    human = load_boxes(SAMPLE / "labels.csv")
    pool = pool_set(load_unlabeled(SAMPLE / "images"), human.images)
    assert len(pool) == 12
    got = label_pool(human, pool, LocalizeConfig.from_dict(TINY), FeatureCache(cache_dir), LabelSpec(2, 0.5))
    assert [r["n_train"] for r in got.history] == [36, 37]
    assert [r["accepted"] for r in got.history] == [1, 1]
    assert list(got.state.trial[:3]) == [1, 2, 0] and np.isnan(got.state.boxes[2]).all()


def test_every_teacher_gives_two_views_and_the_first_is_the_model(cache_dir, monkeypatch):
    """Three teachers per trial: the rule sees their plain and mirrored views (6), and the trial's
    model is the teacher with the config's own seed."""
    real, views = labeling.propose, []

    def spy(probs, boxes, ok, rule):
        views.append((len(probs), len(boxes)))
        return real(probs, boxes, ok, rule)

    monkeypatch.setattr(labeling, "propose", spy)
    human = load_boxes(SAMPLE / "labels.csv")
    pool = pool_set(load_unlabeled(SAMPLE / "images"), human.images)
    cfg = LocalizeConfig.from_dict(TINY)
    got = label_pool(human, pool, cfg, FeatureCache(cache_dir), LabelSpec(1, 0.5, teachers=3))
    assert views == [(6, 6)]
    assert got.trained.cfg.training.seed == cfg.training.seed
    assert labeling.seeded(cfg, 2).training.seed == cfg.training.seed + 2


@pytest.mark.parametrize("args,message", [
    (["--threshold", "1.5"], "--threshold must be in [0, 1], got 1.5"),
    (["--n-trials", "0"], "--n-trials must be at least 1, got 0"),
    (["--teachers", "0"], "--teachers must be at least 1, got 0"),
    (["--data-raw", SAMPLE / "labels.csv"], "no pool images"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, message):
    base = {"--data": SAMPLE / "labels.csv", "--data-raw": SAMPLE / "images", "--out": tmp_path / "o"}
    base.update(dict(zip(args[::2], args[1::2])))
    code = main(["localize", "label", *[str(a) for kv in base.items() for a in kv]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists()
