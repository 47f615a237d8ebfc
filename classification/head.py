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

from classification import distributed
from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.data import ImageSet
from classification.errors import InputError
from classification.inference import extract_features
from classification.losses import create_loss
from classification.metrics import no_validation, scores
from classification.models import classifier_module
from classification.trainer import create_optimizer, run_stage
from classification.views import ViewStore


def training_views(model, cfg: TrainConfig, data_cfg, images: ImageSet, strong: np.ndarray,
                   cache: FeatureCache, device: str, progress: bool) -> tuple[ViewStore, np.ndarray, list]:
    """Every image's 1 + V views in a `ViewStore` (images without augmented views repeat the eval
    view), its ok mask, and the skipped files. Extracted a chunk of images at a time, so only
    one chunk of float32 features is in memory at once."""
    common = dict(runtime=cfg.runtime, device=device, batch_size=cfg.batch_size, workers=cfg.workers,
                  n_ops=cfg.n_ops, progress=progress, tail_blocks=cfg.tail_blocks)
    weak = ~strong if cfg.augment_human else np.zeros_like(strong)
    store, ok, skipped = None, np.ones(len(images), bool), []
    for rows, chunk in images.chunks():
        base = extract_features(model, chunk, data_cfg, cache, kind="eval", **common)
        skipped += base.skipped
        ok[rows] = base.ok
        if base.feats.shape[-1] == 0:  # nothing in this chunk could be decoded
            continue
        if store is None:
            store = ViewStore(len(images), 1 + cfg.n_views, base.feats.shape[-1], folder=cache.root)
        block = np.repeat(base.feats[0][:, None], 1 + cfg.n_views, axis=1)
        for kind, mask in (("weak", weak[rows]), ("strong", strong[rows])):
            idx = np.flatnonzero(mask & base.ok)
            if cfg.n_views and len(idx):
                aug = extract_features(model, chunk.subset(idx), data_cfg, cache, kind=kind,
                                       n_views=cfg.n_views, **common)
                block[idx, 1:] = aug.feats.transpose(1, 0, 2)
                store.distinct[rows[idx]] = 1 + cfg.n_views
                ok[rows[idx]] &= aug.ok
        store.write(int(rows[0]), block)
    if store is None:
        store = ViewStore(len(images), 1 + cfg.n_views, 0, folder=cache.root)
    return store, ok, skipped


def fit_head(model, cfg: TrainConfig, data_cfg, train: ImageSet, val: ImageSet, cache: FeatureCache,
             strong, sample_weight, device, progress, on_epoch):
    n_tr = len(train)
    strong_all = np.concatenate([strong, np.zeros(len(val), bool)])
    views, ok, skipped = training_views(model, cfg, data_cfg, train.concat(val), strong_all, cache,
                                        device, progress)
    with views:  # under torchrun every rank helped extract, but rank 0 alone trains the head
        fitted = (_fit_views(model, cfg, data_cfg, views, ok, n_tr, train, val, sample_weight, progress,
                             on_epoch) if distributed.is_main() or not distributed.active() else None)
    trainable = classifier_module(model) if not cfg.tail_blocks else model
    history, best, state = distributed.broadcast(fitted and (*fitted, trainable.state_dict()))
    trainable.load_state_dict(state)
    return history, best, skipped


def _fit_views(model, cfg, data_cfg, views: ViewStore, ok, n_tr, train, val, sample_weight, progress,
               on_epoch):
    y = np.concatenate([train.labels, val.labels])
    w = np.concatenate([sample_weight, np.ones(len(val), np.float32)])
    tr = np.flatnonzero(ok[:n_tr])
    va = n_tr + np.flatnonzero(ok[n_tr:])
    if len(tr) == 0:
        raise InputError("none of the training images could be decoded")
    if cfg.tail_blocks:
        from classification.tail import fit_tail

        return fit_tail(model, cfg, data_cfg, views, y, w, tr, va, len(train.classes), progress, on_epoch)
    head = classifier_module(model)
    loss_fn = create_loss(cfg.loss, cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)
    evaluate = make_feature_evaluator(head, views.take(np.zeros(len(va), np.int64), va), y[va], loss_fn,
                                      len(train.classes))
    history: list[dict] = []
    init = {k: v.clone() for k, v in head.state_dict().items()}
    name = cfg.resolved_optimizer("head")
    make_epoch = _lbfgs_epoch_fn if name == "lbfgs" else _epoch_fn
    opt = _optimizer(head, cfg, name)
    best = run_stage(head, make_epoch(head, opt, loss_fn, views, y, w, tr, cfg, gen), evaluate,
                     opt, cfg.epochs, cfg, "head", history, on_epoch, progress)
    if cfg.refit and len(va) and best["epoch"] >= 0:
        head.load_state_dict(init)
        opt = _optimizer(head, cfg, name)
        train_epoch = make_epoch(head, opt, loss_fn, views, y, w, np.concatenate([tr, va]), cfg, gen)
        for epoch in range(best["epoch"] + 1):
            train_epoch(epoch)
    return history, best


def _optimizer(head, cfg: TrainConfig, name: str):
    lr = 1.0 if name == "lbfgs" else cfg.lr
    return create_optimizer(name, [{"params": head.parameters(), "lr": lr}], cfg.weight_decay)


def _lbfgs_epoch_fn(head, opt, loss_fn, views: ViewStore, y: np.ndarray, w: np.ndarray, rows: np.ndarray,
                    cfg: TrainConfig, gen: torch.Generator):
    """One epoch = one L-BFGS step (20 iterations) on the distinct views of every image in `rows`,
    each view weighted 1/(its image's view count), with an L2 penalty on the weights: the convex
    problem a logistic regression solves. The loss and its gradient are summed one block of the
    store at a time."""
    view_w = views.view_weights(rows, w)
    total_w = float(view_w.sum())
    y_slots = torch.from_numpy(np.repeat(y, views.n_slots))
    weights = [p for n, p in head.named_parameters() if n.endswith("weight")]

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = 0.5 * cfg.l2 * sum((p ** 2).sum() for p in weights)
        loss.backward()
        total = float(loss.detach())
        for xs, start, stop, ws in views.blocks(view_w):
            ys = y_slots[start * views.n_slots:stop * views.n_slots]
            part = loss_fn(head(xs), ys, ws) * (float(ws.sum()) / max(total_w, 1e-12))
            part.backward()
            total += float(part.detach())
        return torch.tensor(total)

    def train_epoch(epoch: int) -> float:
        head.train()
        return float(opt.step(closure))

    return train_epoch


def _epoch_fn(head, opt, loss_fn, views: ViewStore, y: np.ndarray, w: np.ndarray, rows: np.ndarray,
              cfg: TrainConfig, gen: torch.Generator):
    """One epoch over `rows`: a random distinct view per image, shuffled minibatches."""
    ys, ws = torch.from_numpy(y), torch.from_numpy(w)

    def train_epoch(epoch: int) -> float:
        head.train()
        order = rows[torch.randperm(len(rows), generator=gen).numpy()]
        pick = (torch.rand(len(order), generator=gen).numpy() * views.distinct[order]).astype(np.int64)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            b, v = order[start:start + cfg.batch_size], pick[start:start + cfg.batch_size]
            loss = loss_fn(head(views.take(v, b)), ys[b], ws[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        return total / max(len(order), 1)

    return train_epoch


def make_feature_evaluator(head, x_va, y_va: np.ndarray, loss_fn, n_classes: int):
    xv, yv = torch.as_tensor(np.ascontiguousarray(x_va, np.float32)), torch.from_numpy(y_va)

    @torch.no_grad()
    def evaluate() -> dict:
        if len(yv) == 0:
            return no_validation()
        head.eval()
        logits = head(xv)
        return {"loss": float(loss_fn(logits, yv)), **scores(y_va, logits.argmax(1).numpy(), n_classes)}

    return evaluate
