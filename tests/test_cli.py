"""The CLI end to end on the bundled sample, through the installed console script's entry point."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from autolabel.cli import main


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, sample, cache_dir):
    out = tmp_path_factory.mktemp("ck")
    assert main(["--quiet", "train", "--data-clean", str(sample / "labeled"), "--out", str(out),
                 "--img-size", "128", "--test", str(sample / "test"), "--cache-dir", str(cache_dir)]) == 0
    return out


def test_train_writes_a_checkpoint_folder(checkpoint):
    names = {p.name for p in checkpoint.iterdir()}
    assert {"model.pt", "classes.json", "config.json", "metrics.json", "confusion_matrix.png"} <= names
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    assert metrics["mode"] == "head" and metrics["test"]["accuracy"] > 0.3
    assert len(metrics["test"]["report"]) >= 10


def test_predict_writes_probabilities(checkpoint, sample, cache_dir, tmp_path, capsys):
    code, out, _ = run(capsys, "--quiet", "predict", "--checkpoint", str(checkpoint), "--images",
                       str(sample / "unlabeled"), "--out", str(tmp_path / "p.csv"), "--cache-dir", str(cache_dir))
    assert code == 0 and "predicted 460 images" in out
    frame = pd.read_csv(tmp_path / "p.csv")
    probs = frame[[c for c in frame.columns if c.startswith("prob_")]]
    assert list(frame.columns[:3]) == ["path", "label", "confidence"] and probs.shape == (460, 10)
    assert (probs.sum(axis=1).sub(1).abs() < 1e-4).all()
    assert (frame.confidence == probs.max(axis=1)).all()


def test_tag2label_and_split(sample, tmp_path, capsys):
    code, out, _ = run(capsys, "data", "tag2label", "--in-dir", str(sample / "test"),
                       "--out-dataset", str(tmp_path / "dataset.csv"), "--out-labeling", str(tmp_path / "tag2cls.json"))
    assert code == 0 and "200 images in 10 classes" in out
    code, out, _ = run(capsys, "data", "split", "--in-csv", str(tmp_path / "dataset.csv"),
                       "--out-csv", str(tmp_path / "folds.csv"), "--n-folds", "5", "--train-folds", "0,1,2,3")
    assert code == 0
    folds = pd.read_csv(tmp_path / "folds.csv")
    assert sorted(folds.fold.unique()) == [0, 1, 2, 3, 4]
    assert (folds.groupby("fold").label.value_counts() == 4).all()  # 20 per class over 5 folds
    assert len(pd.read_csv(tmp_path / "folds_train.csv")) == 160
    assert len(pd.read_csv(tmp_path / "folds_valid.csv")) == 40


@pytest.mark.parametrize("args,message", [
    (["train", "--data-clean", "does/not/exist", "--out", "x"], "labelled data not found: does/not/exist"),
    (["train", "--data-clean", "data/labeled", "--out", "x", "--model", "resnet18"], "no offline pretrained weights"),
    (["train", "--data-clean", "data/labeled", "--out", "x", "--mode", "fast"], "unknown mode 'fast'"),
    (["data", "split", "--in-csv", "data/unlabeled_truth.csv", "--out-csv", "x.csv", "--train-folds", "7"],
     "--train-folds must be fold ids"),
])
def test_user_errors_are_one_line_with_exit_code_2(args, message, capsys, tmp_path, monkeypatch, sample):
    monkeypatch.chdir(sample.parent)
    code, _, err = run(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert err.count("\n") == 1
