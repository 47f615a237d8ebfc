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
from classification.context import FitContext
from classification.data import ImageSet
from classification.errors import InputError
from classification.featurenorm import eval_slot_weights, fit_centre
from classification.losses import create_loss
from classification.models import classifier_module
from classification.train.optimizers import create_optimizer
from classification.train.stage import Stage, run_stage
from classification.train.steps import ViewSet, feature_evaluator, lbfgs_epoch_fn, minibatch_epoch_fn
from classification.train.tail import fit_tail
from classification.train.views import training_views


def fit_head(ctx: FitContext, train: ImageSet, val: ImageSet, strong: np.ndarray, sample_weight: np.ndarray):
    """Train the head (and with `tail_blocks` the tail) on cached views of train + val; returns
    (history, best epoch's record, skipped files)."""
    n_tr = len(train)
    strong_all = np.concatenate([strong, np.zeros(len(val), bool)])
    views, ok, skipped = training_views(ctx, train.concat(val), strong_all)
    data = ViewSet(views, np.concatenate([train.labels, val.labels]),
                   np.concatenate([sample_weight, np.ones(len(val), np.float32)]),
                   tr=np.flatnonzero(ok[:n_tr]), va=n_tr + np.flatnonzero(ok[n_tr:]), n_classes=len(train.classes))
    trainable = classifier_module(ctx.model) if not ctx.cfg.tail_blocks else ctx.model
    with views:  # under torchrun every rank helped extract, but rank 0 alone trains
        if len(data.tr) == 0:
            raise InputError("none of the training images could be decoded")
        history, best, state = distributed.on_main(lambda: (*_fit_views(ctx, data), trainable.state_dict()))
    trainable.load_state_dict(state)
    return history, best, skipped


def _fit_views(ctx: FitContext, data: ViewSet):
    if ctx.cfg.tail_blocks:
        return fit_tail(ctx, data)
    cfg, head, tr, va = ctx.cfg, classifier_module(ctx.model), data.tr, data.va
    weights = eval_slot_weights(data.views.n, data.views.n_slots, np.concatenate([tr, va]))
    fit_centre(head, ((feats, w) for feats, _, _, w in data.views.blocks(weights)))
    loss_fn = create_loss(cfg.loss, cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)
    evaluate = feature_evaluator(head, data.views.take(np.zeros(len(va), np.int64), va), data.y[va], loss_fn,
                                 data.n_classes)
    history: list[dict] = []
    init = {k: v.clone() for k, v in head.state_dict().items()}
    name = cfg.resolved_optimizer("head")

    def epoch_fn(opt, rows: np.ndarray):
        if name == "lbfgs":
            return lbfgs_epoch_fn(head, opt, loss_fn, data, rows, cfg.l2)
        return minibatch_epoch_fn(head, opt, loss_fn, data, rows, cfg.batch_size, gen)

    opt = _optimizer(head, cfg, name)
    best = run_stage(ctx, head, Stage("head", cfg.epochs, epoch_fn(opt, tr), evaluate, opt), history)
    if cfg.refit and len(va) and best["epoch"] >= 0:
        head.load_state_dict(init)
        opt = _optimizer(head, cfg, name)
        train_epoch = epoch_fn(opt, np.concatenate([tr, va]))
        for epoch in range(best["epoch"] + 1):
            train_epoch(epoch)
    return history, best


def _optimizer(head, cfg, name: str):
    lr = 1.0 if name == "lbfgs" else cfg.lr
    return create_optimizer(name, [{"params": head.parameters(), "lr": lr}], cfg.weight_decay)
