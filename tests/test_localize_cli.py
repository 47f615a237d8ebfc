"""`autolabel localize train|predict` end to end on the bundled box sample, through the console
entry point: exit codes, files, columns, original-pixel boxes, ONNX against eager, one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from autolabel.cli import main
from classification.data import load_files, load_unlabeled
from classification.digest import file_digest, recorded
from classification.errors import InputError
from localization.checkpoint import load_localizer
from localization.predict import predict_images

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "boxes_sample"
TINY = """version: tiny-test
model: {img_size: 64}
augmentation: {views: 2}
training: {head_epochs: 2, epochs: 1, unfreeze: 1, workers: 0}
"""


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    got = capsys.readouterr()
    return code, got.out, got.err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, cache_dir) -> Path:
    root = tmp_path_factory.mktemp("loc")
    (root / "tiny.yaml").write_text(TINY)
    code = main(["--quiet", "localize", "train", "--data", str(SAMPLE / "labels.csv"), "--out", str(root / "ck"),
                 "--config", str(root / "tiny.yaml"), "--test", str(SAMPLE / "test.csv"),
                 "--box-weight", "200", "--cache-dir", str(cache_dir)])
    assert code == 0
    return root / "ck"


def test_train_writes_checkpoint_metrics_and_pictures(checkpoint):
    names = {p.name for p in checkpoint.iterdir()}
    assert {"model.pt", "classes.json", "config.json", "metrics.json", "curves.png", "best_worst.png"} <= names
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    assert metrics["version"] == "tiny-test" and metrics["config"]["criterion"]["box_weight"] == 200
    assert [r["stage"] for r in metrics["history"]] == ["heads", "heads", "unfreeze"]
    assert metrics["test"]["n"] == 12 and 0 <= metrics["test"]["mean_iou"] <= 1
    assert Image.open(checkpoint / "best_worst.png").size == (3 * 224, 2 * (224 + 14))


def test_predict_writes_original_pixel_boxes(checkpoint, cache_dir, tmp_path, capsys):
    code, out, _ = run(capsys, "--quiet", "localize", "predict", "--checkpoint", checkpoint, "--images",
                       SAMPLE / "test.csv", "--out", tmp_path / "p.csv", "--tta", "--cache-dir", cache_dir)
    assert code == 0 and "predicted 12 images" in out and "ms per image" in out
    frame = pd.read_csv(tmp_path / "p.csv")
    assert list(frame.columns) == ["path", "label", "confidence", "x0", "y0", "x1", "y1", "agreement"]
    sizes = np.array([Image.open(p).size for p in frame.path])
    assert (frame.x0 >= 0).all() and (frame.y0 >= 0).all()
    assert (frame.x1 <= sizes[:, 0]).all() and (frame.y1 <= sizes[:, 1]).all()
    assert (frame.x1 > frame.x0).all() and frame.agreement.between(0, 1).all()


def test_boxes_scale_with_the_image(checkpoint, cache_dir, tmp_path):
    """The same photo at twice the size letterboxes to (almost) the same input, so its box in
    original pixels is twice as large: the mapping back does not depend on the image size."""
    src = Image.open(SAMPLE / pd.read_csv(SAMPLE / "test.csv").path[0])
    src.save(tmp_path / "a.png")
    src.resize((src.width * 2, src.height * 2), Image.BICUBIC).save(tmp_path / "b.png")
    trained = load_localizer(checkpoint)
    pred = predict_images(trained, load_files([tmp_path / "a.png", tmp_path / "b.png"]), runtime="torch", workers=0)
    assert np.abs(pred.boxes[1] - 2 * pred.boxes[0]).max() < 0.02 * max(src.size) * 2


def test_onnx_runtime_equals_eager(checkpoint, cache_dir):
    trained = load_localizer(checkpoint)
    images = load_unlabeled(SAMPLE / "test.csv")
    onnx = predict_images(trained, images, runtime="onnx", tta=True, cache_root=cache_dir, workers=0)
    eager = predict_images(trained, images, runtime="torch", tta=True, workers=0)
    assert onnx.ok.all() and np.abs(onnx.probs - eager.probs).max() < 1e-4
    assert np.abs(onnx.boxes - eager.boxes).max() < 0.05  # pixels
    assert np.abs(onnx.agreement - eager.agreement).max() < 1e-3
    exports = list((cache_dir / "onnx").glob("localizer-*.onnx"))
    assert exports and all(recorded(p) == file_digest(p) for p in exports)  # NAME.onnx.sha256 beside each


def test_a_damaged_checkpoint_is_refused(checkpoint, tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    for name in ("model.pt", "classes.json", "config.json"):
        (folder / name).write_bytes((checkpoint / name).read_bytes())
    assert "model.pt" in json.loads((folder / "config.json").read_text())["digests"]
    data = bytearray((folder / "model.pt").read_bytes())
    data[-100] ^= 0xFF
    (folder / "model.pt").write_bytes(bytes(data))
    with pytest.raises(InputError, match="is damaged"):
        load_localizer(folder)


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "nowhere.csv", "--out", "x"], "box data not found: nowhere.csv"),
    (["train", "--data", SAMPLE / "labels.csv", "--out", "x", "--resize", "crop"],
     "unknown resize 'crop'; valid: letterbox, stretch"),
    (["train", "--data", SAMPLE / "labels.csv", "--out", "x", "--model", "no_such_net"], "unknown model 'no_such_net'"),
    (["train", "--data", SAMPLE / "labels.csv", "--out", "x", "--unfreeze", "-1"], "unfreeze must be >= 0, got -1"),
    (["predict", "--checkpoint", SAMPLE, "--images", SAMPLE / "test.csv", "--out", "p.csv"],
     "not a localizer checkpoint"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, message):
    code, _, err = run(capsys, "localize", *args)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("autolabel: error: ") and message in err, err


def test_bad_config_is_one_line_and_exit_2(capsys, tmp_path):
    (tmp_path / "c.yaml").write_text("version: v9\nmodel: {name: tf_efficientnet_lite0, colour: red}\n")
    code, _, err = run(capsys, "localize", "train", "--data", SAMPLE / "labels.csv", "--out", tmp_path / "o",
                       "--config", tmp_path / "c.yaml")
    assert code == 2 and err.count("\n") == 1
    assert "unknown key(s) colour; valid: box_head, dropout, hidden, img_size, name, weights" in err
    assert not (tmp_path / "o").exists()
