"""Training and inference on the bundled sample: real images, real weights, real ONNX Runtime."""
from __future__ import annotations

import shutil

import numpy as np
import torch
import pytest

from classification.checkpoint import load_checkpoint, save_checkpoint
from classification.config import TrainConfig
from classification.data import load_labeled, stratified_split
from classification.engine import fit
from classification.inference import predict

SIZE = 128  # small input keeps the tests in seconds; the benchmarks use 224


def _train(sample, cache, **kw):
    lb = load_labeled(sample / "labeled")
    cfg = TrainConfig(img_size=SIZE, **kw)
    tr, va = stratified_split(lb.labels, cfg.val_fraction, cfg.seed)
    return fit(cfg, lb.subset(tr), lb.subset(va), cache), cfg


def _accuracy(result, sample, cache, **kw):
    test = load_labeled(sample / "test")
    pred = predict(result.model, test, result.data_cfg, cache, **kw)
    return float((pred.probs.argmax(1) == test.labels).mean()), pred


@pytest.fixture(scope="module")
def trained(sample, cache):
    return _train(sample, cache)


def test_head_beats_chance_by_far(trained, sample, cache):
    acc, _ = _accuracy(trained[0], sample, cache)
    assert acc >= 0.30, acc  # 10 classes: chance is 0.10


def test_pretrained_beats_random_init(trained, sample, cache):
    random_init, _ = _train(sample, cache, weights=None)
    acc_pre, _ = _accuracy(trained[0], sample, cache)
    acc_rand, _ = _accuracy(random_init, sample, cache)
    assert acc_pre > acc_rand + 0.10, (acc_pre, acc_rand)


def test_onnx_fast_path_equals_eager(trained, sample, cache):
    result = trained[0]
    _, fast = _accuracy(result, sample, cache, runtime="onnx")
    from classification.cache import FeatureCache
    _, eager = _accuracy(result, sample, FeatureCache(None), runtime="torch")
    assert np.abs(fast.probs - eager.probs).max() < 1e-4
    assert np.array_equal(fast.probs.argmax(1), eager.probs.argmax(1))


def test_checkpoint_round_trip_predicts_identically(trained, sample, cache, tmp_path):
    result, cfg = trained
    save_checkpoint(tmp_path / "ck", result.model, load_labeled(sample / "labeled").classes, cfg, result.data_cfg)
    model, classes, cfg2, data_cfg = load_checkpoint(tmp_path / "ck")
    assert cfg2 == cfg and data_cfg == result.data_cfg and len(classes) == 10
    _, before = _accuracy(result, sample, cache)
    after = predict(model, load_labeled(sample / "test"), data_cfg, cache)
    assert np.array_equal(before.probs, after.probs)


def test_same_seed_same_head(sample, cache, trained):
    again, _ = _train(sample, cache)
    a, b = trained[0].model.classifier.state_dict(), again.model.classifier.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def broken_pool(sample, tmp_path):
    """data/test/cat's 20 images and broken.jpg, whose headers are intact but whose scan is cut
    short: loading accepts it and only decoding finds the damage."""
    pool = tmp_path / "pool"
    shutil.copytree(sample / "test" / "cat", pool)
    data = sorted(pool.glob("*.jpg"))[0].read_bytes()
    (pool / "broken.jpg").write_bytes(data[: data.index(b"\xff\xda") + 200])
    from classification.data import load_unlabeled

    return pool, load_unlabeled(pool)


def test_corrupt_file_is_skipped_and_reported(broken_pool, cache, trained):
    pool, images = broken_pool
    pred = predict(trained[0].model, images, trained[0].data_cfg, cache)
    assert pred.ok.sum() == 20 and not pred.ok[images.paths.index(str(pool / "broken.jpg"))]
    assert [p for p, _ in pred.skipped] == [str(pool / "broken.jpg")]


def test_fit_result_predicts_the_argmax_or_minus_one(broken_pool, cache, trained):
    pool, images = broken_pool
    result = trained[0]
    guess = result.predict(images, cache)
    probs = result.predict_probs(images, cache)
    assert guess.shape == (21,) and guess[images.paths.index(str(pool / "broken.jpg"))] == -1
    assert np.array_equal(guess[probs.ok], probs.probs[probs.ok].argmax(1)) and (guess[probs.ok] >= 0).all()
    assert np.array_equal(probs.probs, predict(result.model, images, result.data_cfg, cache).probs)


@pytest.mark.slow
def test_finetune_runs_on_cpu_and_its_checkpoint_predicts(sample, cache, tmp_path):
    result, cfg = _train(sample, cache, mode="finetune", stage1_epochs=1, stage2_epochs=1,
                         unfreeze_blocks=2, batch_size=16)
    assert [h["stage"] for h in result.history] == ["stage1", "stage2"]
    save_checkpoint(tmp_path / "ft", result.model, load_labeled(sample / "labeled").classes, cfg, result.data_cfg)
    model, _, _, data_cfg = load_checkpoint(tmp_path / "ft")
    pred = predict(model, load_labeled(sample / "test"), data_cfg, cache)
    assert pred.probs.shape == (200, 10) and np.allclose(pred.probs.sum(1), 1, atol=1e-5)


def test_tail_training_on_cached_maps_predicts_like_the_whole_model(sample, cache):
    result, cfg = _train(sample, cache, tail_blocks=1, tail_epochs=1, n_views=1)
    assert [h["stage"] for h in result.history][-1] == "tail" and result.history[0]["stage"] == "head"
    test = load_labeled(sample / "test")
    from classification.cache import FeatureCache
    from_maps = predict(result.model, test, result.data_cfg, cache, tail_blocks=1).probs
    whole = predict(result.model, test, result.data_cfg, FeatureCache(None), runtime="torch").probs
    assert np.abs(from_maps - whole).max() < 1e-3  # float16 maps vs a float32 forward
    assert (from_maps.argmax(1) == whole.argmax(1)).mean() > 0.98
