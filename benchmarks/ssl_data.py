"""The draws and the peers of bench_ssl.py: which images are the human labels for a seed, the
features every peer shares, and scikit-learn's semi-supervised classifiers on them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

from autolabel.audit import load_truth
from classification.cache import FeatureCache
from classification.config import DEFAULT_MODEL, TrainConfig
from classification.context import FitContext
from classification.data import ImageSet, load_labeled, load_unlabeled
from classification.engine import sized
from classification.features import extract_features
from classification.models import create_classifier
from classification.transforms import data_config


@dataclass
class Draw:
    """One seed's split of a dataset: human labels, the pool (its truth for scoring only), test."""
    labeled: ImageSet
    pool: ImageSet
    test: ImageSet
    truth: np.ndarray


def load(root: Path) -> Draw:
    """A benchmark folder as it is: its labelled folder, pool (with truth) and test split. Loading
    hashes every file, so a setting loads once and each seed draws from it (`draw`)."""
    labeled, pool = load_labeled(root / "labeled"), load_unlabeled(root / "unlabeled")
    test = load_labeled(root / "test", classes=labeled.classes)
    return Draw(labeled, pool, test, load_truth(root / "unlabeled_truth.csv", pool, labeled.classes))


def draw(full: Draw, k: int, seed: int) -> Draw:
    """Seed s's k human labels per class. A labelled folder with more than k per class gives k of
    its own (drawn per seed); one with exactly k gives itself for seed 0, and for other seeds k per
    class drawn from labelled + pool by the pool's truth (the rest is the pool, same size)."""
    labeled, pool, test, truth = full.labeled, full.pool, full.test, full.truth
    rng, n_cls = np.random.default_rng(1000 + seed), len(labeled.classes)
    if np.bincount(labeled.labels, minlength=n_cls).min() > k:
        pick = [rng.choice(np.flatnonzero(labeled.labels == c), k, replace=False) for c in range(n_cls)]
        return Draw(labeled.subset(np.concatenate(pick)), pool, test, truth)
    if seed == 0:
        return full
    known = np.flatnonzero(truth >= 0)
    everything = labeled.concat(pool.subset(known).with_labels(truth[known], labeled.classes))
    pick = np.concatenate([rng.choice(np.flatnonzero(everything.labels == c), k, replace=False)
                           for c in range(n_cls)])
    rest = np.setdiff1d(np.arange(len(everything)), pick)
    return Draw(everything.subset(pick), everything.subset(rest).with_labels(np.full(len(rest), -1), labeled.classes),
                test, everything.labels[rest])


def shared_features(d: Draw, cache: FeatureCache) -> dict:
    """Eval-view features of the draw's sets, as the scikit-learn peers see them: the backbone's
    raw pooled features at the product's input size. (Given the head's square-rooted, normalised
    features instead, SelfTrainingClassifier's LogisticRegression never reaches its 0.8 threshold.)"""
    cfg = sized(TrainConfig(), d.labeled.paths + d.pool.paths)
    model = create_classifier(cfg.model, 2)
    ctx = FitContext(model, cfg, data_config(model, cfg.img_size), cache)
    return {n: extract_features(ctx, s).feats[0] for n, s in (("lb", d.labeled), ("pool", d.pool), ("test", d.test))}


def run_peer(name: str, d: Draw, feats: dict, seed: int) -> dict:
    """A scikit-learn peer: its accepted pseudo-labels, their confidence, its test predictions."""
    x = np.vstack([feats["lb"], feats["pool"]])
    n_lb = len(d.labeled)
    y = np.r_[d.labeled.labels, np.full(len(d.pool), -1)]
    if name == "selftraining":
        est = SelfTrainingClassifier(LogisticRegression(max_iter=2000, random_state=seed), threshold=0.8).fit(x, y)
        pseudo = np.where(est.labeled_iter_[n_lb:] > 0, est.transduction_[n_lb:], -1)
        conf = est.predict_proba(feats["pool"]).max(1)
    elif name == "labelspreading":
        est = LabelSpreading(kernel="knn", n_neighbors=7).fit(x, y)
        pseudo, conf = est.transduction_[n_lb:], est.label_distributions_[n_lb:].max(1)
    else:
        raise ValueError(name)
    return {"pseudo": pseudo, "confidence": conf, "test_pred": est.predict(feats["test"])}
