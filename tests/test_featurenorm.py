"""FeatureNorm (the head's first layer), the input size chosen from the images, and checkpoints
from before FeatureNorm existed."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from classification.checkpoint import load_checkpoint, save_checkpoint
from classification.config import TrainConfig
from classification.data import load_unlabeled
from classification.engine import sized
from classification.featurenorm import FeatureNorm, eval_slot_weights, feature_norm, fit_centre
from classification.models import classifier_module, create_classifier
from classification.transforms import DataConfig


def test_feature_norm_centres_on_the_fitted_rows_and_keeps_a_fixed_length():
    gen = torch.Generator().manual_seed(0)
    feats = torch.rand(200, 16, generator=gen) * 6  # non-negative, like pooled ReLU6 features
    norm = FeatureNorm(16)
    weights = torch.zeros(200)
    weights[:50] = 1.0  # only the first 50 rows count
    fit_centre(torch.nn.Sequential(norm), [(feats[:120], weights[:120]), (feats[120:], weights[120:])])
    assert torch.allclose(norm.centre, FeatureNorm.spherical(feats[:50]).mean(0), atol=1e-6)
    out = norm(feats)
    assert torch.allclose(out.norm(dim=1), torch.full((200,), 4.0), atol=1e-4)  # sqrt(16)
    assert torch.isfinite(out).all()
    grad = torch.zeros(1, 16, requires_grad=True)  # a zero feature (ReLU) still has a finite gradient
    norm(grad + torch.eye(16)[:1]).sum().backward()
    assert torch.isfinite(grad.grad).all()


def test_eval_slot_weights_count_only_the_eval_view_of_the_given_rows():
    w = eval_slot_weights(4, 3, np.array([0, 2]))
    assert w.sum() == 2 and w[0, 0] == w[2, 0] == 1 and w[:, 1:].sum() == 0


def test_heads_start_with_feature_norm_unless_asked_not_to():
    with_norm = create_classifier("tf_efficientnet_lite0", 3, weights=None)
    plain = create_classifier("tf_efficientnet_lite0", 3, weights=None, norm=False)
    assert feature_norm(classifier_module(with_norm)) is not None
    assert feature_norm(classifier_module(plain)) is None
    mlp = create_classifier("tf_efficientnet_lite0", 3, weights=None, head="mlp")
    assert feature_norm(classifier_module(mlp)) is not None
    assert mlp(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_a_checkpoint_from_before_feature_norm_loads_with_a_plain_head(tmp_path):
    model = create_classifier("tf_efficientnet_lite0", 3, weights=None, norm=False)
    cfg = TrainConfig(model="tf_efficientnet_lite0", weights=None, img_size=64)
    data_cfg = DataConfig(64, (0.5,) * 3, (0.5,) * 3)
    save_checkpoint(tmp_path, model, ["a", "b", "c"], cfg, data_cfg)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["train"]["feature_norm"] is False  # what the head holds, not what was asked
    del meta["train"]["feature_norm"]  # as written before the setting existed
    (tmp_path / "config.json").write_text(json.dumps(meta))
    loaded, classes, cfg2, _ = load_checkpoint(tmp_path)
    assert feature_norm(classifier_module(loaded)) is None and classes == ["a", "b", "c"]
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(loaded(x), model.eval()(x))


def test_the_input_size_comes_from_the_images_unless_given(sample):
    paths = load_unlabeled(sample / "unlabeled").paths  # 32-px images
    assert sized(TrainConfig(), paths).img_size == 160
    assert sized(TrainConfig(img_size=96), paths).img_size == 96
    with pytest.raises(Exception):
        TrainConfig(img_size=8)
