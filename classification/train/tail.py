"""Head mode with a trainable tail: the last N backbone blocks and the head train on cached
feature maps of the frozen trunk before them, so each (image, view) still passes through the
expensive part of the network once. This lifts the ceiling that a head on frozen features has,
at a few hundred images per second on two CPU cores.

Two stages, as in finetune mode: (1) the head alone, by full-batch L-BFGS on the pooled features
of the still-pretrained tail (eval view), which is plain head mode and good with few labels;
(2) tail and head together with AdamW on the cached views. Without stage 1, a handful of minibatch
steps on a few dozen labels leaves the head near its zero start and the loop's first
pseudo-labels poor (37.5 % test accuracy at 4 labels per class, against 59.8 % for head mode).
BatchNorm statistics in the tail stay frozen (pretrained running stats): with small, noisy
pseudo-labelled batches, updating them hurts more than it helps.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from classification.context import FitContext
from classification.losses import create_loss
from classification.metrics import no_validation, scores
from classification.models import classifier_module, map_shape, split_model
from classification.train.optimizers import create_optimizer
from classification.train.stage import Stage, run_stage
from classification.train.rotation import JointLoss, RotationNet, forward_eval, rotation_head, split_outputs
from classification.train.steps import ViewSet, feature_evaluator, lbfgs_epoch_fn, minibatch_epoch_fn
from classification.train.views import ViewStore


def fit_tail(ctx: FitContext, data: ViewSet):
    """Train tail + head on the cached maps in `data` (a ViewStore of flattened float16 maps)."""
    cfg = ctx.cfg
    maps = replace(data, shape=map_shape(ctx.model, ctx.data_cfg.size, cfg.tail_blocks))
    tail, head = split_model(ctx.model, cfg.tail_blocks)[1], classifier_module(ctx.model)
    rot_head = rotation_head(ctx.model)
    # with aux_rotation: the rotation head beside the class head, on rotated cached maps (a cheap
    # proxy for rotated images: see classification/train/rotation.py); it trains in this stage only
    net = RotationNet(tail, head, rot_head, cfg.seed) if rot_head is not None else torch.nn.Sequential(tail, head)
    heads = [*head.parameters(), *(rot_head.parameters() if rot_head is not None else ())]
    opt = create_optimizer("adamw", [{"params": heads, "lr": cfg.lr},
                                     {"params": tail.parameters(), "lr": cfg.lr * cfg.backbone_lr_mult}],
                           cfg.weight_decay)
    loss_fn = create_loss(cfg.loss, cfg.label_smoothing)
    train_loss = JointLoss(loss_fn, cfg.aux_weight) if rot_head is not None else loss_fn
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    _fit_head_first(ctx, tail, head, maps, history)
    # net stays in eval mode: frozen BatchNorm statistics; there is no dropout in the tail
    train_epoch = minibatch_epoch_fn(net, opt, train_loss, maps, maps.tr, cfg.batch_size, gen, train_mode=False)
    if rot_head is not None:
        train_epoch = train_loss.epochs(train_epoch)
    stage = Stage("tail", cfg.tail_epochs, train_epoch, _evaluator(net, loss_fn, maps), opt)
    return history, run_stage(ctx, net, stage, history)


def _evaluator(net, loss_fn, maps: ViewSet):
    """Validation on the eval view's maps, 256 images at a time (with aux_rotation, also the
    rotation head's `rot_*` scores on maps turned by `eval_rotations`)."""
    va, ys = maps.va, torch.from_numpy(maps.y)

    @torch.no_grad()
    def evaluate() -> dict:
        if len(va) == 0:
            return no_validation()
        net.eval()
        logits, rot = split_outputs([forward_eval(net, maps.batch(np.zeros(len(b), np.int64), b), torch.from_numpy(b))
                                     for b in np.array_split(va, max(1, len(va) // 256))])
        return {"loss": float(loss_fn(logits, ys[va])), **scores(maps.y[va], logits.argmax(1).numpy(),
                                                                maps.n_classes), **rot}

    return evaluate


@torch.no_grad()
def _pooled(tail, maps: ViewSet, rows: np.ndarray) -> np.ndarray:
    tail.eval()
    chunks = [tail(maps.batch(np.zeros(len(b), np.int64), b)).numpy()
              for b in np.array_split(rows, max(1, len(rows) // 512))]
    return np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32)


def _fit_head_first(ctx: FitContext, tail, head, maps: ViewSet, history: list[dict]) -> None:
    """Stage 1: the head alone by L-BFGS on the eval view's pooled features (see the docstring)."""
    cfg = ctx.cfg
    pooled = _pooled(tail, maps, np.arange(maps.views.n))
    loss_fn = create_loss(cfg.loss, cfg.label_smoothing)
    opt = create_optimizer("lbfgs", [{"params": head.parameters(), "lr": 1.0}], cfg.weight_decay)
    evaluate = feature_evaluator(head, pooled[maps.va], maps.y[maps.va], loss_fn, maps.n_classes)
    with ViewStore.from_array(pooled[None], dtype=np.float32) as store:
        epoch = lbfgs_epoch_fn(head, opt, loss_fn, replace(maps, views=store, shape=None), maps.tr, cfg.l2)
        run_stage(ctx, head, Stage("head", cfg.epochs, epoch, evaluate, opt), history)
