"""The pseudo-mask loop (`segmentation.label`, `autolabel segment label`) on a copy of the bundled
sample: 8 human masks, a pool of 6 images, the sample's masks as the pool's truth.

The fast tests put a stand-in for training and prediction (probabilities chosen per image) so
that what the loop decides and writes is checked in seconds; the slow one trains for real."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import segmentation.label as loop
from autolabel.cli import main
from classification.errors import InputError
from segmentation.config import SegConfig
from segmentation.data import IGNORE
from segmentation.engine import SegFitResult
from segmentation.label import LabelSpec, label_pool

HUMAN = ["000001", "000004", "000027", "000028", "000403", "000404", "000206_test", "000213_test"]
SURE = ["000008", "000011", "000406"]  # trial 1's stand-in model is sure of these
UNSURE = ["000013", "000408", "000220_test"]  # ... and of these only from trial 2 on
CFG = SegConfig(size=64, max_side=64, head_epochs=1, epochs=0, batch_size=8, batches_per_epoch=1)


@pytest.fixture
def data(sample, tmp_path):
    src = sample / "seg_sample"
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in HUMAN + SURE + UNSURE:
        shutil.copy(src / "images" / f"{stem}.jpg", tmp_path / "images")
    for stem in HUMAN:
        shutil.copy(src / "masks" / f"{stem}.png", tmp_path / "masks")
    shutil.copy(src / "classes.csv", tmp_path)
    return tmp_path


@pytest.fixture
def stand_in(monkeypatch):
    """Training records what it was given; prediction is sure of SURE (and, from trial 2, of
    every image): a patches square at 0.9 in sure background (0.97), with a top strip at 0.6."""
    fits = []

    def fit(cfg, train, val, classes, pseudo=(), progress=False, on_epoch=None, **_):
        fits.append((len(train), len(pseudo)))
        return SegFitResult(None, (0.5,) * 3, (0.5,) * 3, [], {"epoch": 0, "val_miou": 0.5},
                            len(train) + len(pseudo), 0.0)

    def predict_pool(run, result, rows):
        for i in rows:
            h, w = np.asarray(Image.open(run.pool.images[i])).shape[:2]
            probs = np.zeros((4, h, w), np.float32)
            if run.pool.stems[i] in SURE or len(fits) > 1:
                probs[0], probs[2] = 0.97, 0.03
                probs[:, 50:100, 50:100] = np.array([0.1, 0, 0.9, 0])[:, None, None]
                probs[0, :10], probs[1, :10], probs[2, :10] = 0.6, 0.4, 0.0
            else:
                probs[0], probs[1] = 0.5, 0.5
            yield probs

    monkeypatch.setattr(loop, "fit", fit)
    monkeypatch.setattr(loop, "predict_pool", predict_pool)
    return fits


def spec(data, **kw) -> LabelSpec:
    return LabelSpec(data / "images", data / "masks", data / "out", **{"n_trials": 2, "threshold": 0.8, **kw})


def test_loop_accepts_and_records(data, sample, stand_in):
    run = label_pool(spec(data, truth_masks=sample / "seg_sample" / "masks"), CFG)
    out = data / "out"
    frame = pd.read_csv(out / "dataset.csv")
    assert list(frame.columns) == ["path", "mask", "source", "confidence", "trial"]
    assert (frame.source == "human").sum() == 8 and (frame[frame.source == "human"].trial == 0).all()
    pseudo = frame[frame.source == "pseudo"]
    by_trial = {t: sorted(s.rsplit("/", 1)[-1][:-4] for s in g["path"]) for t, g in pseudo.groupby("trial")}
    assert by_trial == {1: sorted(SURE), 2: sorted(UNSURE)}
    assert (pseudo.confidence >= 0.8).all()
    for stem in SURE + UNSURE:
        mask = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        assert mask.shape == (200, 200)  # the pool image's own size
        assert set(np.unique(mask)) == {0, 2, IGNORE}
        assert (mask[:10] == IGNORE).all() and (mask[10:] != IGNORE).all()  # 0.6 < 0.8: ignored
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["accepted"] for r in metrics["trials"]] == [3, 3] and metrics["n_pool"] == 6
    assert all(0 < r["mean_confidence"] <= 1 and 0 <= r["pseudo_miou"] <= 1 for r in metrics["trials"])
    assert metrics["trials"][0]["truth_scored"] == 3
    assert metrics["trials"][0]["ignored_pixels"] == pytest.approx(10 / 200)  # the top strip
    human_train = stand_in[0][0]
    assert stand_in == [(human_train, 0), (human_train, 3)]  # trial 2 trains on the accepted pseudo-masks too
    assert run.finished and json.loads((out / "state.json").read_text())["trial"] == 2
    assert sorted(p.stem for p in (data / "masks").iterdir()) == sorted(HUMAN)  # inputs untouched


def test_resume_continues_after_trial_1(data, stand_in):
    label_pool(spec(data, n_trials=1), CFG)
    assert stand_in == [stand_in[0]]
    (data / "out" / "masks" / "000013.png").write_bytes(b"left by a killed trial")
    run = label_pool(spec(data, resume=True), CFG.with_(threads=1))  # how fast it runs may change
    assert len(stand_in) == 2  # trial 1 is not redone
    assert [r["trial"] for r in run.records] == [1, 2]
    assert run.records[0]["accepted_stems"] == sorted(SURE)
    assert np.asarray(Image.open(data / "out" / "masks" / "000013.png")).shape == (200, 200)


def test_resume_refuses_other_settings_and_a_new_run_refuses_the_folder(data, stand_in):
    label_pool(spec(data, n_trials=1), CFG)
    with pytest.raises(InputError, match=r"the saved run has threshold=0.8, this one 0.7"):
        label_pool(spec(data, threshold=0.7, resume=True), CFG)
    with pytest.raises(InputError, match=r"the saved run has train.size=64, this one 96"):
        label_pool(spec(data, resume=True), CFG.with_(size=96))
    with pytest.raises(InputError, match="the pool images differ"):
        (data / "images" / "000013.jpg").unlink()
        label_pool(spec(data, resume=True), CFG)
    with pytest.raises(InputError, match="already holds a pseudo-mask run; continue it with --resume"):
        label_pool(spec(data), CFG)
    assert len(stand_in) == 1


@pytest.mark.parametrize("args,message", [
    (["--threshold", "0"], "--threshold must be in (0, 1]"),
    (["--n-trials", "0"], "--n-trials must be at least 1"),
    (["--out", "{d}/images/out"], "would write inside --images"),
    (["--out", "{d}"], "would write inside --masks"),
    (["--masks", "{d}/nope"], "masks folder not found"),
    (["--images", "{d}/masks"], "nothing to label"),
])
def test_bad_input_is_one_line(data, capsys, args, message):
    base = {"--images": "{d}/images", "--masks": "{d}/masks", "--out": "{d}/out"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["--no-mlflow", "segment", "label"] + [x.format(d=data) for kv in base.items() for x in kv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


@pytest.mark.slow
def test_cli_runs_end_to_end(data, sample, capsys):
    (data / "tiny.yaml").write_text("train:\n  size: 64\n  max_side: 64\n  head_epochs: 1\n  epochs: 0\n"
                                    "  batch_size: 8\n  batches_per_epoch: 1\n")
    args = ["--quiet", "segment", "label", "--images", data / "images", "--masks", data / "masks",
            "--out", data / "out", "--n-trials", "1", "--threshold", "0.3", "--config", data / "tiny.yaml",
            "--truth-masks", sample / "seg_sample" / "masks"]
    assert main([str(a) for a in args]) == 0
    text = capsys.readouterr().out
    assert "trial 1: accepted" in text and "pseudo-mask mean IoU" in text and "tracked in MLflow" in text
    metrics = json.loads((data / "out" / "metrics.json").read_text())
    assert [r["trial"] for r in metrics["trials"]] == [1] and metrics["trials"][0]["pseudo_miou"] is not None
    frame = pd.read_csv(data / "out" / "dataset.csv")
    pseudo = frame[frame.source == "pseudo"]
    assert len(pseudo) == metrics["trials"][0]["accepted"] > 0  # 4 classes: every pixel is >= 0.25 sure
    for m in pseudo["mask"]:
        assert Image.open(m).size == (200, 200)
    again = [str(a) for a in args] + ["--resume", "--n-trials", "2", "--no-mlflow"]
    assert main(again) == 0
    assert "nothing left to label" in capsys.readouterr().out or len(pseudo) < 6


@pytest.mark.slow
def test_mlflow_parent_and_a_child_per_trial(data, stand_in, tmp_path):
    from mlflow import MlflowClient

    from autolabel.tracking_segment import tracker_for
    from segmentation.label import LabelHooks

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {"train": CFG.to_dict(), "loop": {"n_trials": 2, "threshold": 0.8}}
    tracker = tracker_for(data / "out", config, {"uri": uri, "experiment": "seg"})
    run = label_pool(spec(data), CFG, LabelHooks(tracker.begin, tracker.on_epoch, tracker.on_trial))
    tracker.finish(run)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("seg").experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == tracker.run_id),
                      key=lambda r: r.info.run_name)
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert parent[0].data.metrics["final_accepted"] == 6 and parent[0].data.params["task"] == "segment"
    assert [r.info.run_name for r in children] == ["trial-1", "trial-2"]
    assert [r.data.metrics["accepted"] for r in children] == [3, 3]
    assert all(r.info.status == "FINISHED" for r in children)
