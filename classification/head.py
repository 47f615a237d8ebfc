"""Head mode: the backbone is frozen, so each (image, view) passes through it once and its
features come from the cache afterwards. The head trains on those features in seconds.

Every training image has 1 + V cached views: the eval view and V augmented views (strong for
pseudo-labels; weak for human labels only with `augment_human`, else the eval view again). With
AdamW or SGD each epoch samples one view per image; with L-BFGS (the default for a linear head)
each epoch is 20 full-batch iterations over every view, which solves the same L2-regularised
problem as a logistic regression, and is as good with a few labels per class.
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
from classification.metrics import no_validation, scores
from classification.models import classifier_module
from classification.trainer import create_optimizer, run_stage


def training_views(model, cfg: TrainConfig, data_cfg, images: ImageSet, strong: np.ndarray,
                   cache: FeatureCache, device: str, progress: bool):
    """Features (1 + V, N, D) of every image, how many of its views are distinct (N,), its ok
    mask, and the skipped files. Images without augmented views repeat the eval view."""
    common = dict(runtime=cfg.runtime, device=device, batch_size=cfg.batch_size, workers=cfg.workers,
                  n_ops=cfg.n_ops, progress=progress, tail_blocks=cfg.tail_blocks)
    base = extract_features(model, images, data_cfg, cache, kind="eval", **common)
    feats = np.repeat(base.feats[:1], 1 + cfg.n_views, axis=0)
    distinct = np.ones(len(images), np.int64)
    ok = base.ok.copy()
    weak = ~strong if cfg.augment_human else np.zeros_like(strong)
    for kind, mask in (("weak", weak), ("strong", strong)):
        idx = np.flatnonzero(mask & ok)
        if cfg.n_views and len(idx):
            aug = extract_features(model, images.subset(idx), data_cfg, cache, kind=kind,
                                   n_views=cfg.n_views, **common)
            feats[1:, idx] = aug.feats
            distinct[idx] = 1 + cfg.n_views
            ok[idx] &= aug.ok
    return feats, distinct, ok, base.skipped


def fit_head(model, cfg: TrainConfig, data_cfg, train: ImageSet, val: ImageSet, cache: FeatureCache,
             strong, sample_weight, device, progress, on_epoch):
    n_tr = len(train)
    strong_all = np.concatenate([strong, np.zeros(len(val), bool)])
    x, distinct, ok, skipped = training_views(model, cfg, data_cfg, train.concat(val), strong_all,
                                              cache, device, progress)
    y = np.concatenate([train.labels, val.labels])
    w = np.concatenate([sample_weight, np.ones(len(val), np.float32)])
    tr = np.flatnonzero(ok[:n_tr])
    va = n_tr + np.flatnonzero(ok[n_tr:])
    if len(tr) == 0:
        raise InputError("none of the training images could be decoded")
    if cfg.tail_blocks:
        from classification.tail import fit_tail

        history, best = fit_tail(model, cfg, data_cfg, (x, distinct), y, w, tr, va, len(train.classes),
                                 progress, on_epoch)
        return history, best, skipped
    head = classifier_module(model)
    loss_fn = create_loss(cfg.loss, cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)
    evaluate = make_feature_evaluator(head, x[0, va], y[va], loss_fn, len(train.classes))
    history: list[dict] = []
    init = {k: v.clone() for k, v in head.state_dict().items()}
    name = cfg.resolved_optimizer("head")
    make_epoch = _lbfgs_epoch_fn if name == "lbfgs" else _epoch_fn
    opt = _optimizer(head, cfg, name)
    views = (x, distinct)
    best = run_stage(head, make_epoch(head, opt, loss_fn, views, y, w, tr, cfg, gen), evaluate,
                     opt, cfg.epochs, cfg, "head", history, on_epoch, progress)
    if cfg.refit and len(va) and best["epoch"] >= 0:
        head.load_state_dict(init)
        opt = _optimizer(head, cfg, name)
        train_epoch = make_epoch(head, opt, loss_fn, views, y, w, np.concatenate([tr, va]), cfg, gen)
        for epoch in range(best["epoch"] + 1):
            train_epoch(epoch)
    return history, best, skipped


def _optimizer(head, cfg: TrainConfig, name: str):
    lr = 1.0 if name == "lbfgs" else cfg.lr
    return create_optimizer(name, [{"params": head.parameters(), "lr": lr}], cfg.weight_decay)


def _lbfgs_epoch_fn(head, opt, loss_fn, views, y: np.ndarray, w: np.ndarray, rows: np.ndarray,
                    cfg: TrainConfig, gen: torch.Generator):
    """One epoch = one L-BFGS step (20 iterations) on the distinct views of every image in `rows`,
    each view weighted 1/(its image's view count), with an L2 penalty on the weights: the convex
    problem a logistic regression solves."""
    x, distinct = views
    pick = [(v, r) for r in rows for v in range(distinct[r])]
    v_idx, r_idx = np.array([p[0] for p in pick]), np.array([p[1] for p in pick])
    xs = torch.from_numpy(np.ascontiguousarray(x[v_idx, r_idx]))
    ys = torch.from_numpy(y[r_idx])
    ws = torch.from_numpy((w[r_idx] / distinct[r_idx]).astype(np.float32))
    weights = [p for n, p in head.named_parameters() if n.endswith("weight")]

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(head(xs), ys, ws) + 0.5 * cfg.l2 * sum((p ** 2).sum() for p in weights)
        loss.backward()
        return loss

    def train_epoch(epoch: int) -> float:
        head.train()
        return float(opt.step(closure).detach())

    return train_epoch


def _epoch_fn(head, opt, loss_fn, views, y: np.ndarray, w: np.ndarray, rows: np.ndarray,
              cfg: TrainConfig, gen: torch.Generator):
    """One epoch over `rows`: a random cached view per image, shuffled minibatches."""
    x = views[0]
    xs, ys, ws = torch.from_numpy(x[:, rows]), torch.from_numpy(y[rows]), torch.from_numpy(w[rows])

    def train_epoch(epoch: int) -> float:
        head.train()
        views = torch.randint(0, xs.shape[0], (xs.shape[1],), generator=gen)
        order = torch.randperm(xs.shape[1], generator=gen)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            b = order[start:start + cfg.batch_size]
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
            return no_validation()
        head.eval()
        logits = head(xv)
        return {"loss": float(loss_fn(logits, yv)), **scores(y_va, logits.argmax(1).numpy(), n_classes)}

    return evaluate
