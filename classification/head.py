"""Head mode: the backbone is frozen, so each (image, view) passes through it once and its
features come from the cache afterwards. The head trains on those features in seconds.

Every training image has 1 + V cached views: the eval view and V augmented views (weak for human
labels, strong for pseudo-labels); each epoch samples one of them per image.
"""
from __future__ import annotations

import numpy as np
import torch

from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.data import ImageSet
from classification.errors import InputError
from classification.inference import extract_features
from classification.losses import create_loss
from classification.metrics import scores
from classification.models import classifier_module
from classification.trainer import create_optimizer, run_stage


def training_views(model, cfg: TrainConfig, data_cfg, images: ImageSet, strong: np.ndarray,
                   cache: FeatureCache, device: str, progress: bool):
    """Features (1 + V, N, D) of every image, its ok mask, and the skipped files."""
    common = dict(runtime=cfg.runtime, device=device, batch_size=cfg.batch_size, workers=cfg.workers,
                  n_ops=cfg.n_ops, progress=progress)
    base = extract_features(model, images, data_cfg, cache, kind="eval", **common)
    feats = np.zeros((1 + cfg.n_views, len(images), base.feats.shape[-1]), np.float32)
    feats[0] = base.feats[0]
    ok = base.ok.copy()
    for kind, mask in (("weak", ~strong), ("strong", strong)):
        idx = np.flatnonzero(mask & ok)
        if cfg.n_views and len(idx):
            aug = extract_features(model, images.subset(idx), data_cfg, cache, kind=kind,
                                   n_views=cfg.n_views, **common)
            feats[1:, idx] = aug.feats
            ok[idx] &= aug.ok
    return feats, ok, base.skipped


def fit_head(model, cfg: TrainConfig, data_cfg, train: ImageSet, val: ImageSet, cache: FeatureCache,
             strong, sample_weight, device, progress, on_epoch):
    n_tr = len(train)
    strong_all = np.concatenate([strong, np.zeros(len(val), bool)])
    x, ok, skipped = training_views(model, cfg, data_cfg, train.concat(val), strong_all, cache,
                                    device, progress)
    y = np.concatenate([train.labels, val.labels])
    w = np.concatenate([sample_weight, np.ones(len(val), np.float32)])
    tr = np.flatnonzero(ok[:n_tr])
    va = n_tr + np.flatnonzero(ok[n_tr:])
    if len(tr) == 0:
        raise InputError("none of the training images could be decoded")
    head = classifier_module(model)
    loss_fn = create_loss(cfg.loss, cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)
    evaluate = make_feature_evaluator(head, x[0, va], y[va], loss_fn, len(train.classes))
    history: list[dict] = []
    init = {k: v.clone() for k, v in head.state_dict().items()}
    opt = _optimizer(head, cfg)
    best = run_stage(head, _epoch_fn(head, opt, loss_fn, x, y, w, tr, cfg.batch_size, gen), evaluate,
                     opt, cfg.epochs, cfg, "head", history, on_epoch, progress)
    if cfg.refit and len(va) and best["epoch"] >= 0:
        head.load_state_dict(init)
        opt = _optimizer(head, cfg)
        train_epoch = _epoch_fn(head, opt, loss_fn, x, y, w, np.concatenate([tr, va]), cfg.batch_size, gen)
        for epoch in range(best["epoch"] + 1):
            train_epoch(epoch)
    return history, best, skipped


def _optimizer(head, cfg: TrainConfig):
    return create_optimizer(cfg.optimizer, [{"params": head.parameters(), "lr": cfg.lr}], cfg.weight_decay)


def _epoch_fn(head, opt, loss_fn, x: np.ndarray, y: np.ndarray, w: np.ndarray, rows: np.ndarray,
              batch_size: int, gen: torch.Generator):
    """One epoch over `rows`: a random cached view per image, shuffled minibatches."""
    xs, ys, ws = torch.from_numpy(x[:, rows]), torch.from_numpy(y[rows]), torch.from_numpy(w[rows])

    def train_epoch(epoch: int) -> float:
        head.train()
        views = torch.randint(0, xs.shape[0], (xs.shape[1],), generator=gen)
        order = torch.randperm(xs.shape[1], generator=gen)
        total = 0.0
        for start in range(0, len(order), batch_size):
            b = order[start:start + batch_size]
            loss = loss_fn(head(xs[views[b], b]), ys[b], ws[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        return total / len(order)

    return train_epoch


def make_feature_evaluator(head, x_va: np.ndarray, y_va: np.ndarray, loss_fn, n_classes: int):
    xv, yv = torch.from_numpy(np.ascontiguousarray(x_va)), torch.from_numpy(y_va)

    @torch.no_grad()
    def evaluate() -> dict:
        if len(yv) == 0:
            return {"loss": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan")}
        head.eval()
        logits = head(xv)
        return {"loss": float(loss_fn(logits, yv)), **scores(y_va, logits.argmax(1).numpy(), n_classes)}

    return evaluate
