"""Head mode with a trainable tail: the last N backbone blocks and the head train on cached
feature maps of the frozen trunk before them, so each (image, view) still passes through the
expensive part of the network once. This lifts the ceiling that a head on frozen features has,
at a few hundred images per second on two CPU cores.

BatchNorm statistics in the tail stay frozen (pretrained running stats): with small, noisy
pseudo-labelled batches, updating them hurts more than it helps.
"""
from __future__ import annotations

import numpy as np
import torch

from classification.config import TrainConfig
from classification.inference import map_shape
from classification.losses import create_loss
from classification.metrics import scores
from classification.models import classifier_module, split_model
from classification.trainer import create_optimizer, run_stage


def fit_tail(model, cfg: TrainConfig, data_cfg, views, y: np.ndarray, w: np.ndarray, tr: np.ndarray,
             va: np.ndarray, n_classes: int, progress: bool, on_epoch):
    """Train tail + head on cached maps `views = (x (1+V, N, D) float16, distinct (N,))`."""
    x, distinct = views
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
        return torch.from_numpy(x[v_idx, r_idx].astype(np.float32)).reshape(-1, *shape)

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
            return {"loss": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan")}
        net.eval()
        logits = torch.cat([net(batch(np.zeros(len(b), np.int64), b))
                            for b in np.array_split(va, max(1, len(va) // 256))])
        return {"loss": float(loss_fn(logits, ys[va])), **scores(y[va], logits.argmax(1).numpy(), n_classes)}

    history: list[dict] = []
    best = run_stage(net, train_epoch, evaluate, opt, cfg.tail_epochs, cfg, "tail", history, on_epoch, progress)
    return history, best
