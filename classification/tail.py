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

import numpy as np
import torch

from classification.config import TrainConfig
from classification.inference import map_shape
from classification.losses import create_loss
from classification.metrics import no_validation, scores
from classification.models import classifier_module, split_model
from classification.trainer import create_optimizer, run_stage
from classification.views import ViewStore


def fit_tail(model, cfg: TrainConfig, data_cfg, views, y: np.ndarray, w: np.ndarray, tr: np.ndarray,
             va: np.ndarray, n_classes: int, progress: bool, on_epoch):
    """Train tail + head on the cached maps in `views` (a ViewStore of flattened float16 maps)."""
    distinct = views.distinct
    shape = map_shape(model, data_cfg.size, cfg.tail_blocks)
    tail, head = split_model(model, cfg.tail_blocks)[1], classifier_module(model)
    net = torch.nn.Sequential(tail, head)
    opt = create_optimizer("adamw", [{"params": head.parameters(), "lr": cfg.lr},
                                     {"params": tail.parameters(), "lr": cfg.lr * cfg.backbone_lr_mult}],
                           cfg.weight_decay)
    loss_fn = create_loss(cfg.loss, cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)
    ys, ws = torch.from_numpy(y), torch.from_numpy(w)

    def batch(v_idx: np.ndarray, r_idx: np.ndarray) -> torch.Tensor:
        return views.take(v_idx, r_idx).reshape(-1, *shape)

    def train_epoch(epoch: int) -> float:
        net.eval()  # frozen BatchNorm statistics; there is no dropout in the tail
        order = tr[torch.randperm(len(tr), generator=gen).numpy()]
        pick = (torch.rand(len(order), generator=gen).numpy() * distinct[order]).astype(np.int64)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            rows, v = order[start:start + cfg.batch_size], pick[start:start + cfg.batch_size]
            loss = loss_fn(net(batch(v, rows)), ys[rows], ws[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        return total / max(len(order), 1)

    @torch.no_grad()
    def evaluate() -> dict:
        if len(va) == 0:
            return no_validation()
        net.eval()
        logits = torch.cat([net(batch(np.zeros(len(b), np.int64), b))
                            for b in np.array_split(va, max(1, len(va) // 256))])
        return {"loss": float(loss_fn(logits, ys[va])), **scores(y[va], logits.argmax(1).numpy(), n_classes)}

    history: list[dict] = []
    _fit_head_first(tail, head, cfg, views, batch, y, w, tr, va, n_classes, history, on_epoch, progress)
    best = run_stage(net, train_epoch, evaluate, opt, cfg.tail_epochs, cfg, "tail", history, on_epoch, progress)
    return history, best


@torch.no_grad()
def _pooled(tail, batch, rows: np.ndarray) -> np.ndarray:
    tail.eval()
    chunks = [tail(batch(np.zeros(len(b), np.int64), b)).numpy() for b in np.array_split(rows, max(1, len(rows) // 512))]
    return np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32)


def _fit_head_first(tail, head, cfg, views, batch, y, w, tr, va, n_classes, history, on_epoch, progress):
    """Stage 1: the head alone by L-BFGS on the eval view's pooled features (see the docstring)."""
    from classification.head import _lbfgs_epoch_fn, make_feature_evaluator

    rows = np.arange(views.n)
    pooled = _pooled(tail, batch, rows)
    loss_fn = create_loss(cfg.loss, cfg.label_smoothing)
    opt = create_optimizer("lbfgs", [{"params": head.parameters(), "lr": 1.0}], cfg.weight_decay)
    evaluate = make_feature_evaluator(head, pooled[va], y[va], loss_fn, n_classes)
    with ViewStore.from_array(pooled[None], dtype=np.float32) as store:
        epoch = _lbfgs_epoch_fn(head, opt, loss_fn, store, y, w, tr, cfg, None)
        run_stage(head, epoch, evaluate, opt, cfg.epochs, cfg, "head", history, on_epoch, progress)
