"""aux_rotation (seed 001's MultiHeadNet): the rotation head trains beside the class head in
finetune and tail modes, is scored on validation, is saved and restored with the checkpoint, and
head mode refuses it. Real images from data/, 64 px, one epoch per stage."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from autolabel.supervised import train_supervised
from classification.cache import FeatureCache
from classification.checkpoint import load_checkpoint, save_checkpoint
from classification.config import TrainConfig
from classification.data import load_labeled, stratified_split
from classification.engine import fit
from classification.errors import InputError
from classification.inference import predict
from classification.models import create_classifier
from classification.train.rotation import (JointLoss, RotationNet, rotate, rotation_head, rotation_png,
                                           rotation_summary)
from classification.transforms import data_config

SIZE = 64
FINETUNE = dict(mode="finetune", stage1_epochs=1, stage2_epochs=1, unfreeze_blocks=1, batch_size=16, workers=0)


def _fit(sample, cache, **kw):
    lb = load_labeled(sample / "labeled")
    cfg = TrainConfig(img_size=SIZE, aux_rotation=True, **kw)
    tr, va = stratified_split(lb.labels, cfg.val_fraction, cfg.seed)
    return fit(cfg, lb.subset(tr), lb.subset(va), cache), cfg, len(va), lb.classes


@pytest.fixture(scope="module")
def finetuned(sample, cache):
    return _fit(sample, cache, **FINETUNE)


def test_rotate_turns_each_image_by_its_own_quarter_turns():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out = rotate(x, torch.tensor([0, 3]))
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], torch.rot90(x[1], 3, dims=(1, 2)))
    assert torch.equal(rotate(out, torch.tensor([0, 1]))[1], x[1])  # 3 + 1 quarter turns: back upright
    assert not torch.equal(out[1], x[1])


@pytest.mark.slow
def test_finetune_trains_the_rotation_head_and_records_it(finetuned):
    result, _, n_val, _ = finetuned
    assert [h["stage"] for h in result.history] == ["stage1", "stage2"]
    for record in result.history:
        assert np.isfinite(record["train_rot_loss"]) and 0 <= record["train_rot_accuracy"] <= 1
        assert np.isfinite(record["val_rot_loss"]) and 0 <= record["val_rot_accuracy"] <= 1
        cm = np.array(record["val_rot_confusion"])
        assert cm.shape == (4, 4) and cm.sum() == n_val
        assert record["val_rot_accuracy"] == pytest.approx(np.trace(cm) / n_val)
        # eval_rotations: row modulo 4, so each rotation is applied to its share of the images
        assert cm.sum(1).tolist() == [len(range(r, n_val, 4)) for r in range(4)]
    assert rotation_head(result.model).weight.abs().sum() > 0  # it moved from its zero start


@pytest.mark.slow
def test_checkpoint_round_trip_keeps_the_rotation_head(finetuned, sample, cache, tmp_path):
    result, cfg, _, classes = finetuned
    save_checkpoint(tmp_path / "ck", result.model, classes, cfg, result.data_cfg)
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["train"]["aux_rotation"] is True
    model, _, cfg2, data_cfg = load_checkpoint(tmp_path / "ck")
    assert cfg2.aux_rotation
    assert torch.equal(rotation_head(model).weight, rotation_head(result.model).weight)
    test = load_labeled(sample / "test")
    before = predict(result.model, test, result.data_cfg, cache)
    after = predict(model, test, data_cfg, cache)
    assert np.array_equal(before.probs, after.probs) and before.probs.shape == (len(test), len(classes))


def test_a_checkpoint_without_the_field_loads_without_a_rotation_head(tmp_path):
    """A checkpoint written before aux_rotation existed has no such key in its config.json."""
    cfg = TrainConfig(img_size=SIZE)
    model = create_classifier(cfg.model, 3)
    save_checkpoint(tmp_path / "old", model, ["a", "b", "c"], cfg, data_config(model, SIZE))
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("aux_rotation", "aux_weight"):
        del meta["train"][key]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    loaded, _, cfg, _ = load_checkpoint(tmp_path / "old")
    assert not cfg.aux_rotation and rotation_head(loaded) is None
    assert loaded.state_dict().keys() == model.state_dict().keys()


def _split(sample):
    lb = load_labeled(sample / "labeled")
    tr, va = stratified_split(lb.labels, 0.2, 0)
    return lb.subset(tr), lb.subset(va)


def test_head_mode_refuses_aux_rotation(sample, cache):
    with pytest.raises(InputError, match="aux_rotation needs mode finetune, or mode head with tail_blocks"):
        TrainConfig(mode="head", aux_rotation=True)
    cfg = TrainConfig(mode="auto", device="cpu", aux_rotation=True, img_size=SIZE)  # auto is head on a CPU
    with pytest.raises(InputError, match="aux_rotation needs") as err:
        fit(cfg, *_split(sample), cache)
    assert "\n" not in str(err.value)
    TrainConfig(mode="head", tail_blocks=1, aux_rotation=True)  # tail mode takes it


@pytest.mark.slow
def test_tail_mode_trains_the_rotation_head_on_rotated_maps(sample, cache):
    result, _, n_val, _ = _fit(sample, cache, tail_blocks=1, tail_epochs=1, n_views=1, epochs=2, batch_size=16)
    tail = [h for h in result.history if h["stage"] == "tail"]
    assert len(tail) == 1 and np.array(tail[0]["val_rot_confusion"]).sum() == n_val
    assert "val_rot_loss" not in result.history[0]  # stage 1, the class head alone by L-BFGS
    assert rotation_head(result.model).weight.abs().sum() > 0
    assert np.isfinite(tail[0]["train_rot_loss"])


def test_joint_loss_adds_the_weighted_rotation_loss():
    torch.manual_seed(0)
    feats = torch.nn.Identity()
    net = RotationNet(feats, torch.nn.Flatten(), torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 4)), 0)
    x, y, w = torch.randn(6, 1, 2, 2), torch.randint(4, (6,)), torch.ones(6)
    out = net(x)
    ce = torch.nn.functional.cross_entropy
    loss = JointLoss(lambda logits, y, w: ce(logits, y), 0.5)
    expected = ce(out.logits, y) + 0.5 * ce(out.rot_logits, out.rotations)
    assert torch.allclose(loss(out, y, w), expected)
    assert loss.record(1.0)["rot_loss"] == pytest.approx(float(ce(out.rot_logits, out.rotations).detach()))


@pytest.mark.slow
def test_train_command_writes_the_rotation_confusion_png(sample, tmp_path):
    cfg = TrainConfig(img_size=SIZE, aux_rotation=True, **FINETUNE)
    metrics = train_supervised(sample / "labeled", tmp_path / "aux", cfg, FeatureCache(None))
    assert np.array(metrics["best_epoch"]["val_rot_confusion"]).sum() == metrics["n_val"]
    assert (tmp_path / "aux" / "rotation_confusion.png").stat().st_size > 1000


def test_no_rotation_picture_or_summary_without_the_head(tmp_path):
    best = {"stage": "head", "epoch": 3, "val_loss": 0.5, "val_accuracy": 0.9}  # trained without aux_rotation
    assert rotation_png(best, tmp_path / "r.png") is None and not (tmp_path / "r.png").exists()
    assert rotation_summary(best) == {}
