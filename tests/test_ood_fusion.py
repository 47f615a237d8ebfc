"""The fused out-of-class rule: kNN distance + near-class Mahalanobis++, percentiles of held-out
human labels, and images marked "none of these classes" (--data-other)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from autolabel.cli import main
from classification.data import load_labeled, load_unlabeled
from embeddings.features import Embedder, l2_normalize
from embeddings.fusion import fit_ood, keep_threshold, percentile, score_ood
from embeddings.near import NearScore
from embeddings.ood import auroc


def classes_with_a_hidden_one(seed=0, per_class=25, n_pool=300, dim=64):
    """Three labelled classes spread along shared noisy directions, and a fourth, never labelled,
    that differs only along a quiet direction: close to the labels by plain distance."""
    rng = np.random.default_rng(seed)
    scale = np.r_[np.full(8, 3.0), np.full(dim - 8, 0.3)]  # 8 loud directions, the rest quiet

    def draw(centre, n):
        return centre + rng.normal(size=(n, dim)) * scale

    centres = np.zeros((4, dim))
    centres[:3, 8:11] = np.eye(3) * 3.0
    centres[3, 11] = 3.0  # the hidden class: a quiet direction no labelled class uses
    ref = np.vstack([draw(centres[c], per_class) for c in range(3)])
    labels = np.repeat(np.arange(3), per_class)
    pool_in = np.vstack([draw(centres[c], n_pool) for c in range(3)])
    pool_out = draw(centres[3], n_pool)
    unit = lambda x: l2_normalize(x + 6.0)  # positive offset: unit vectors as the backbone gives
    return unit(ref), labels, unit(pool_in), unit(pool_out)


def test_fused_threshold_keeps_the_requested_share_of_held_out_labels():
    ref, labels, pool_in, pool_out = classes_with_a_hidden_one()
    pool = np.vstack([pool_in, pool_out])
    for tpr in (0.8, 0.95):
        model = fit_ood(ref, labels, pool, tpr=tpr)
        fused = model.fuse(model.calibration())
        assert (fused <= model.threshold).mean() >= tpr
        assert (fused <= model.threshold).mean() < tpr + 0.05  # not more lenient than asked
    marked = pool_out[:5]
    model = fit_ood(ref, labels, pool, marked, tpr=0.9)
    cal = model.calibration()
    kept = (model.fuse(cal) <= model.threshold) & (cal["other"] <= 0)
    assert kept.mean() >= 0.9  # the whole rule, "none of these" included, keeps the share asked


def test_the_near_score_finds_a_class_the_knn_distance_misses():
    ref, labels, pool_in, pool_out = classes_with_a_hidden_one()
    pool = np.vstack([pool_in, pool_out])
    model = fit_ood(ref, labels, pool)
    s_in, s_out = model.score(pool_in), model.score(pool_out)
    assert auroc(s_in["near"], s_out["near"]) > auroc(s_in["knn"], s_out["knn"]) + 0.1
    assert s_out["refused"].mean() > s_in["refused"].mean() + 0.3


def test_percentile_ranks_inside_and_beyond_the_calibration():
    cal = np.array([1.0, 2.0, 3.0, 4.0])
    got = percentile(cal, np.array([0.0, 1.0, 2.5, 4.0, 5.5]))
    assert got[:4].tolist() == pytest.approx([0.25, 0.25, 0.625, 1.0])
    assert got[4] == pytest.approx(1.5)  # past the largest: keeps growing, by the calibration's range
    assert keep_threshold(np.array([0.25, 0.5, 0.75, 1.0]), np.array([False, False, False, True]), 0.75) == 0.75
    with pytest.raises(Exception, match="dim >= 1"):
        NearScore(dim=0)


@pytest.fixture(scope="module")
def embedder(cache):
    return Embedder(cache=cache, img_size=128)


def test_a_digit_is_refused_against_the_bundled_labels(sample, embedder):
    labeled = load_labeled(sample / "labeled")
    digits = load_unlabeled(sample / "ood_mnist")
    photos = load_labeled(sample / "test")
    frame, model, _ = score_ood(labeled, digits.concat(photos), embedder)
    is_digit = frame.path.str.contains("ood_mnist").to_numpy()
    assert model.summary()["parts"] == ["knn", "near"]
    assert frame.refused[is_digit].mean() >= 0.8 and frame.refused[~is_digit].mean() <= 0.2
    assert {"score", "refused", "knn", "near"} <= set(frame.columns)


def test_data_other_images_never_receive_a_label(sample, tmp_path, cache_dir, capsys):
    pool = sorted((sample / "unlabeled").iterdir())
    other = tmp_path / "none_of_these"
    other.mkdir()
    for p in pool[:6]:  # copies of pool images: the run must set their originals aside too
        shutil.copy(p, other / p.name)
    out = tmp_path / "run"
    code = main([str(a) for a in ["--data-clean", sample / "labeled", "--data-raw", sample / "unlabeled",
                                  "--data-other", other, "--out", out, "--cache-dir", cache_dir,
                                  "--img-size", 64, "--n-trials", 1, "--threshold", 0.05, "--policy", "fixed",
                                  "--no-mlflow", "--quiet"]])
    assert code == 0, capsys.readouterr().err
    dataset = pd.read_csv(out / "dataset.csv")
    names = {p.name for p in pool[:6]}
    assert not dataset.path.map(lambda p: p.split("/")[-1]).isin(names).any()
    assert (dataset.source == "pseudo").sum() > 100  # the rest of the pool was labelled
    assert {"ood_score", "ood_knn", "ood_near", "ood_other"} <= set(dataset.columns)
    trial = pd.read_csv(out / "trials" / "trial_01.csv")
    assert len(trial) == len(pool) - 6 and {"ood_near", "ood_other", "ood_refused"} <= set(trial.columns)


def test_images_without_spread_score_without_nan():
    """Identical images (or a torchrun rank's placeholder features) leave no direction to whiten."""
    ref, labels = np.zeros((6, 16), np.float32), np.array([0, 0, 0, 1, 1, 1])
    model = fit_ood(ref, labels, np.zeros((10, 16), np.float32))
    assert all(np.isfinite(v).all() for v in model.score(np.zeros((4, 16), np.float32)).values())
