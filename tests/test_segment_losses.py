"""Losses with an ignore mask, IoU/Dice arithmetic, and the pseudo-mask confidence functions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from classification.errors import InputError
from segmentation.config import LOSS_NAMES, SegConfig
from segmentation.confidence import IMAGE_RULES, accept, ignore_band, image_rule, mask_confidence, pseudo_mask
from segmentation.data import IGNORE
from segmentation.losses import LOSSES, create_loss
from segmentation.metrics import confusion, image_iou, scores

CLASSES = ["background", "a", "b"]


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (2, 16, 16), generator=gen)
    return torch.randn(2, 3, 16, 16, generator=gen), target


def test_registry_matches_config_and_lists_valid_keys():
    assert tuple(LOSSES) == LOSS_NAMES
    with pytest.raises(ValueError, match="valid: dicebce, tversky, cedice"):
        create_loss("focal")
    with pytest.raises(ValueError, match="valid: mean, defect_mean, sure_fraction"):
        image_rule("max")


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_ignored_pixels_count_nowhere(name):
    loss_fn = create_loss(name)
    logits, target = _batch()
    target[:, :8] = IGNORE
    logits.requires_grad_(True)
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad[:, :, :8].abs().max() == 0
    assert logits.grad[:, :, 8:].abs().max() > 0
    changed = logits.detach().clone()
    changed[:, :, :8] = torch.randn_like(changed[:, :, :8]) * 10
    assert torch.allclose(loss_fn(changed, target), loss.detach())


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_right_logits_cost_less_than_wrong_ones(name):
    loss_fn = create_loss(name)
    _, target = _batch()
    right = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 8
    wrong = torch.nn.functional.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 8
    assert loss_fn(right, target) < 0.05 < loss_fn(wrong, target)
    everything_ignored = torch.full_like(target, IGNORE)
    assert loss_fn(wrong, everything_ignored) == 0


def test_iou_and_dice_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, IGNORE]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 2]])
    cm = confusion(truth, pred, 3)
    assert cm.sum() == 7  # the IGNORE pixel counts nowhere
    s = scores(cm, CLASSES)
    assert s["per_class"]["a"]["iou"] == pytest.approx(2 / 3)   # tp 2, fp 1
    assert s["per_class"]["b"]["iou"] == pytest.approx(1 / 2)   # tp 1, fn 1
    assert s["per_class"]["background"]["iou"] == pytest.approx(2 / 4)
    assert s["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)      # defects only
    assert s["miou_all"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert s["per_class"]["a"]["dice"] == pytest.approx(4 / 5)
    assert image_iou(truth, pred, 3) == pytest.approx(s["miou"])
    assert image_iou(np.zeros((2, 2), int), np.zeros((2, 2), int), 3) == 1.0


def test_constant_background_scores_zero_on_defects():
    truth = np.array([[0, 1], [2, 0]])
    s = scores(confusion(truth, np.zeros_like(truth), 3), CLASSES)
    assert s["miou"] == 0 and s["pixel_accuracy"] == 0.5


def test_mask_confidence_and_pseudo_mask():
    probs = np.zeros((3, 4, 4), np.float32)
    probs[0] = 0.97
    probs[1] = 0.03
    probs[:, 1:3, 1:3] = np.array([0.1, 0.6, 0.3])[:, None, None]  # an unsure defect in the middle
    probs[:, 1, 1] = [0.02, 0.96, 0.02]                             # one sure defect pixel
    pred, conf, image_conf = mask_confidence(probs, "defect_mean")
    assert pred.dtype == np.uint8 and (pred[1:3, 1:3] == 1).all() and (pred[0] == 0).all()
    assert conf[1, 1] == pytest.approx(0.96) and conf[2, 2] == pytest.approx(0.6)
    # the defect's band covers the whole 4x4 image here
    assert image_conf == pytest.approx(conf.mean())
    assert mask_confidence(probs, "mean")[2] > mask_confidence(probs, "sure_fraction", 0.9)[2]
    pm = pseudo_mask(pred, conf, 0.9)
    assert pm[1, 1] == 1 and pm[2, 2] == IGNORE and (pm[0] == 0).all()
    assert list(accept(np.array([0.5, 0.9, 0.95]), 0.9)) == [False, True, True]
    assert set(IMAGE_RULES) == {"mean", "defect_mean", "sure_fraction"}


def test_config_checks_at_the_boundary():
    with pytest.raises(InputError, match="multiple of 32"):
        SegConfig(size=100)
    with pytest.raises(InputError, match="unknown loss"):
        SegConfig(loss="focal")
    with pytest.raises(InputError, match="epochs must be an integer"):
        SegConfig(epochs="many")
    assert SegConfig(decoder_width=64).decoder_channels() == (64, 32, 16, 16, 16)


def test_shipped_configs_load():
    from pathlib import Path

    from segmentation.config import load_seg_config

    root = Path(__file__).resolve().parents[1] / "configs"
    cpu, gpu = load_seg_config(root / "segment.yaml"), load_seg_config(root / "segment_gpu.yaml", epochs=3)
    assert cpu.device == "cpu" and cpu.train_stages == -1 and gpu.device == "cuda" and gpu.epochs == 3
    assert cpu.pseudo_share == gpu.pseudo_share == 0.5 and cpu.pseudo_band == gpu.pseudo_band == 0
    assert cpu.ema == gpu.ema == 0.99


def test_weight_average_warms_up_and_counters_follow_the_model():
    from segmentation.engine import _average

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    avg = _average(model, 0.99)
    start = avg.module[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    avg.update_parameters(model)  # the first update copies the weights
    with torch.no_grad():
        model[0].weight.add_(1.0)
    avg.update_parameters(model)  # n = 1: decay (1 + 1) / (10 + 1), not 0.99
    step = (avg.module[0].weight - start - 1.0).detach()
    assert torch.allclose(step, torch.full_like(step, 1 - 2 / 11))
    assert int(avg.module[1].num_batches_tracked) == 7
    assert _average(model, 0.0) is None
    with pytest.raises(InputError, match="ema"):
        SegConfig(ema=1.0)


def test_only_the_deepest_encoder_stages_train():
    from segmentation.models import create_segmenter, encoder_parts

    model = create_segmenter("tf_efficientnet_lite0", 3, weights=None)
    names = {id(m): n for n, m in model.encoder.model.named_modules()}
    frozen, trainable = encoder_parts(model, 1)
    assert frozen and trainable and all(names[id(m)].startswith(("blocks.5", "blocks.6")) for m in trainable)
    assert not encoder_parts(model, 0)[1] and not encoder_parts(model, -1)[0]


def test_pseudo_mask_scores_count_only_kept_pixels():
    from segmentation.metrics import pseudo_mask_scores

    truth = np.array([[0, 1], [1, 2]])
    pseudo = np.array([[0, 1], [IGNORE, 1]])  # one pixel left out, one wrong
    s = pseudo_mask_scores([pseudo.astype(np.uint8)], [truth], CLASSES)
    assert s["pixels_kept"] == 0.75
    assert s["pseudo_miou"] == pytest.approx((1 / 2 + 0) / 2)  # a: tp 1, fp 1; b: fn 1


def test_pseudo_masks_are_drawn_at_their_share_however_many_there_are():
    from segmentation.engine import _loader

    img, mask = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8)
    human, pseudo = [(img, mask)] * 4, [(img, mask)] * 60
    cfg = SegConfig(size=64, batch_size=8, batches_per_epoch=50, pseudo_share=0.5)
    drawn = np.array(list(_loader(cfg, human, pseudo, (0.5,) * 3, (0.5,) * 3).sampler))
    assert len(drawn) == 400 and 0.4 < (drawn < 4).mean() < 0.6  # humans are 6 % of the pairs
    plain = np.array(list(_loader(cfg.with_(pseudo_share=0.0), human, pseudo, (0.5,) * 3, (0.5,) * 3).sampler))
    assert (plain < 4).mean() < 0.15
    with pytest.raises(InputError):
        SegConfig(pseudo_share=1.0)
    with pytest.raises(InputError):
        SegConfig(pseudo_augment="wild")


def test_boundary_band_leaves_only_sure_interiors_and_background():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 2
    banded = ignore_band(mask, 2)
    ring = np.zeros((20, 20), bool)
    ring[3:17, 3:17], inner = True, np.zeros((20, 20), bool)
    inner[7:13, 7:13] = True
    assert np.array_equal(banded == IGNORE, ring & ~inner)  # 2 px either side of the boundary
    assert (banded[inner] == 2).all() and banded[0, 0] == 0 and banded[19, 19] == 0
    assert np.array_equal(ignore_band(mask, 0), mask)

