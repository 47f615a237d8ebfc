"""`lr-find` and `train --folds` on the bundled sample."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from autolabel.cli import main
from autolabel.cli.tools import lr_find as lr_find_command
from classification.config import TrainConfig
from classification.data import load_labeled
from classification.errors import InputError
from classification.lr_find import lr_find, suggest_lr

SIZE = "128"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def lr_find_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("lr-find")(lr_find_command)
    return app


@pytest.fixture(scope="module")
def swept(tmp_path_factory, sample, cache_dir):
    out = tmp_path_factory.mktemp("lr-find")
    result = CliRunner().invoke(lr_find_app(), [
        "--data-clean", str(sample / "labeled"), "--out", str(out), "--img-size", SIZE,
        "--steps", "40", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_lr_find_writes_a_png_and_a_suggestion_inside_the_sweep(swept):
    out, output = swept
    assert (out / "lr_find.png").read_bytes()[:8] == PNG_MAGIC
    with Image.open(out / "lr_find.png") as img:
        img.verify()
    record = json.loads((out / "lr_find.json").read_text())
    lrs, losses = np.array(record["lrs"]), np.array(record["losses"])
    assert record["start"] < record["suggested"] < record["end"]
    assert 3 <= len(lrs) == len(losses) == len(record["raw_losses"]) <= record["steps"]
    assert np.isfinite(losses).all() and np.isfinite(record["raw_losses"]).all()
    assert np.all(np.diff(lrs) > 0) and lrs[0] == pytest.approx(record["start"])
    assert record["optimizer"] == "adamw"  # the default linear head would use lbfgs, which has no LR
    assert f"suggested learning rate: {record['suggested']:.2e}" in output


def test_lr_find_stops_when_the_loss_diverges(sample, cache):
    images = load_labeled(sample / "labeled")
    cfg = TrainConfig(img_size=int(SIZE), n_views=2, optimizer="sgd")
    result = lr_find(cfg, images, cache, start=1e-2, end=1e6, steps=60)
    assert 3 <= len(result.lrs) < 60
    assert np.isfinite(result.losses).all()
    assert result.lrs[0] < result.suggested < result.lrs[-1]


def test_suggestion_is_the_steepest_descent():
    lrs = np.geomspace(1e-6, 1, 61)
    losses = 2.0 / (1 + np.exp(4 * (np.log10(lrs) + 3)))  # falls fastest at 1e-3
    assert suggest_lr(lrs, losses) == pytest.approx(1e-3)


@pytest.mark.parametrize("kw,message", [
    ({"start": 1.0, "end": 1e-3}, "need 0 < start < end"),
    ({"steps": 2}, "steps must be at least 5"),
    ({"cfg": TrainConfig(mode="finetune")}, "lr-find runs in head mode"),
])
def test_lr_find_rejects_bad_settings(kw, message, sample):
    cfg = kw.pop("cfg", TrainConfig(img_size=int(SIZE)))
    with pytest.raises(InputError, match=message):
        lr_find(cfg, load_labeled(sample / "labeled"), None, **kw)


@pytest.fixture(scope="module")
def folds(tmp_path_factory, sample, cache_dir):
    """3 folds of data/test's 20 images per class: 7 + 7 + 6, so the split is uneven."""
    out = tmp_path_factory.mktemp("folds")
    code = main(["--quiet", "train", "--data-clean", str(sample / "test"), "--out", str(out),
                 "--img-size", SIZE, "--folds", "3", "--cache-dir", str(cache_dir)])
    assert code == 0
    return out, json.loads((out / "folds.json").read_text())


def test_folds_are_disjoint_cover_every_image_and_are_stratified(folds, sample):
    _, summary = folds
    held = [[row["path"] for row in f["held_out"]] for f in summary["folds"]]
    every = [p for paths in held for p in paths]
    assert len(every) == len(set(every))  # disjoint
    assert sorted(every) == sorted(load_labeled(sample / "test").paths)  # each image exactly once
    per_fold = [Counter(Path(p).parent.name for p in paths) for paths in held]
    for c in summary["classes"]:
        counts = [fold[c] for fold in per_fold]
        assert max(counts) - min(counts) <= 1, (c, counts)
    assert all(row["label"] == Path(row["path"]).parent.name
               for f in summary["folds"] for row in f["held_out"])


def test_folds_report_per_fold_scores_and_their_mean(folds):
    out, summary = folds
    accs = [f["accuracy"] for f in summary["folds"]]
    assert summary["n_folds"] == 3 and len(accs) == 3
    assert all(0.3 < a <= 1 for a in accs)  # 10 classes: chance is 0.1
    assert summary["mean_std"]["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert summary["mean_std"]["macro_f1"]["std"] == pytest.approx(np.std([f["macro_f1"] for f in summary["folds"]]))
    assert all(f["n_train"] + f["n_val"] + f["n_held_out"] == 200 for f in summary["folds"])
    assert not (out / "model.pt").exists()  # cross-validation measures; it writes no checkpoint


@pytest.mark.parametrize("k,message", [
    ("5", "--folds 5 needs at least 5 images in every class, but class 'airplane' has 4; use --folds 4"),
    ("1", "--folds must be at least 2, got 1"),
])
def test_bad_fold_count_is_a_one_line_error(k, message, sample, tmp_path, capsys):
    code = main(["train", "--data-clean", str(sample / "labeled"), "--out", str(tmp_path), "--folds", k])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert err.count("\n") == 1
