"""`autolabel segment train` and `predict` end to end on the bundled sample (with bad pairs mixed
in), and one-line errors with exit code 2 for bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from autolabel.cli import main

pytestmark = pytest.mark.slow

TINY_YAML = """\
train:
  size: 64          # training crops
  max_side: 64      # the 200 px sample scaled down: seconds on a CPU
  head_epochs: 1
  epochs: 2
  batch_size: 8
  tta: false
"""


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def data(sample, tmp_path_factory):
    """A copy of the sample with an image that has no mask and a mask of the wrong size."""
    root = tmp_path_factory.mktemp("seg-data")
    shutil.copytree(sample / "seg_sample", root, dirs_exist_ok=True)
    Image.new("RGB", (200, 200)).save(root / "images" / "lonely.jpg")
    shutil.copy(root / "images" / "000001.jpg", root / "images" / "shrunk.jpg")
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(root / "masks" / "shrunk.png")
    (root / "tiny.yaml").write_text(TINY_YAML)
    return root


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    import io
    from contextlib import redirect_stdout

    out = tmp_path_factory.mktemp("seg-cli") / "ck"
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["--quiet", "segment", "train", "--images", str(data / "images"), "--masks",
                     str(data / "masks"), "--split", str(data / "splits" / "train.txt"), "--out", str(out),
                     "--config", str(data / "tiny.yaml"), "--loss", "cedice", "--epochs", "1"])
    return code, buf.getvalue(), out


def test_train_runs_and_reports_skipped_pairs(trained):
    code, text, out = trained
    assert code == 0, text
    assert "skipped 2 file(s)" in text and "lonely.jpg: image without a mask" in text
    assert "shrunk.png: mask is 50x50, its image 200x200" in text
    assert "test: mean IoU" in text
    cfg = json.loads((out / "config.json").read_text())["segment"]
    assert cfg["loss"] == "cedice" and cfg["epochs"] == 1 and cfg["size"] == 64  # flags over the YAML
    assert json.loads((out / "classes.json").read_text()) == {"background": 0, "inclusion": 1,
                                                               "patches": 2, "scratches": 3}


def test_predict_runs(trained, data, tmp_path, capsys):
    _, _, ck = trained
    code, out, _ = run(capsys, "--quiet", "segment", "predict", "--checkpoint", ck, "--images",
                       data / "images", "--out", tmp_path / "p", "--cache-dir", tmp_path / "cache")
    assert code == 0 and "predicted 35 images" in out
    assert len(list((tmp_path / "p" / "masks").glob("*.png"))) == 35
    assert Image.open(tmp_path / "p" / "masks" / "000001.png").size == (200, 200)


T = ["train", "--images", "{d}/images", "--masks", "{d}/masks", "--out", "x"]


@pytest.mark.parametrize("args,message", [
    (["train", "--images", "nope", "--masks", "nope", "--out", "x"], "images folder not found: nope"),
    (T + ["--size", "100"], "--size must be a multiple of 32"),
    (T + ["--loss", "focal"], "unknown loss 'focal'; valid: dicebce, tversky, cedice"),
    (T + ["--encoder", "resnet999"], "unknown model 'resnet999'"),
    (T + ["--classes", "{d}/tiny.yaml"], "every line must be index,name"),
    (T + ["--config", "{d}/bad.yaml"], "unknown train key(s) lr"),
    (T + ["--split", "{d}/classes.csv"], "matches a usable image/mask pair"),
    (["predict", "--checkpoint", "{d}", "--images", "{d}/images", "--out", "x"], "not a segmentation checkpoint folder"),
])
def test_bad_input_is_one_line_and_exit_2(data, capsys, tmp_path, args, message):
    (data / "bad.yaml").write_text("train:\n  lr: 0.1\n")
    code, out, err = run(capsys, "segment", *[a.format(d=data) for a in args])
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("autolabel: error: ") and message in err, err
