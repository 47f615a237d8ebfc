"""Epochs over cached features, shared by head mode (head.py) and its tail blocks (tail.py).

`lbfgs_epoch_fn`: one epoch = one L-BFGS step (20 iterations) over every distinct view, the convex
problem a logistic regression solves. `minibatch_epoch_fn`: one epoch = a random distinct view per
image in shuffled minibatches (AdamW or SGD). `feature_evaluator`: validation on the eval view.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from classification.metrics import no_validation, scores
from classification.train.views import ViewStore


def _no_rows() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass(frozen=True)
class ViewSet:
    """Cached views with each image's label and loss weight, and which images train and validate."""
    views: ViewStore
    y: np.ndarray                                  # (N,) class index of each image
    w: np.ndarray                                  # (N,) its loss weight
    tr: np.ndarray = field(default_factory=_no_rows)   # rows that train
    va: np.ndarray = field(default_factory=_no_rows)   # rows that validate (decodable human labels)
    n_classes: int = 0                             # for the validation scores
    shape: tuple | None = None                     # rows are flattened feature maps of this (C, H, W);
                                                   # None: pooled features

    def batch(self, slots: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        """View slots[i] of image rows[i], as float32 (len(rows), D) or (len(rows), C, H, W)."""
        x = self.views.take(slots, rows)
        return x if self.shape is None else x.reshape(-1, *self.shape)


def lbfgs_epoch_fn(head, opt, loss_fn, data: ViewSet, rows: np.ndarray, l2: float):
    """One epoch = one L-BFGS step (20 iterations) on the distinct views of every image in `rows`,
    each view weighted 1/(its image's view count), with an L2 penalty `l2` on the weights: the
    convex problem a logistic regression solves. The loss and its gradient are summed one block
    of the store at a time."""
    views = data.views
    view_w = views.view_weights(rows, data.w)
    total_w = float(view_w.sum())
    y_slots = torch.from_numpy(np.repeat(data.y, views.n_slots))
    weights = [p for n, p in head.named_parameters() if n.endswith("weight")]

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = 0.5 * l2 * sum((p ** 2).sum() for p in weights)
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


def minibatch_epoch_fn(net, opt, loss_fn, data: ViewSet, rows: np.ndarray, batch_size: int,
                       gen: torch.Generator, train_mode: bool = True):
    """One epoch over `rows`: a random distinct view per image, shuffled minibatches. With
    `train_mode` False the net stays in eval mode (frozen BatchNorm statistics: tail.py)."""
    ys, ws = torch.from_numpy(data.y), torch.from_numpy(data.w)

    def train_epoch(epoch: int) -> float:
        net.train(train_mode)
        order = rows[torch.randperm(len(rows), generator=gen).numpy()]
        pick = (torch.rand(len(order), generator=gen).numpy() * data.views.distinct[order]).astype(np.int64)
        total = 0.0
        for start in range(0, len(order), batch_size):
            b, v = order[start:start + batch_size], pick[start:start + batch_size]
            loss = loss_fn(net(data.batch(v, b)), ys[b], ws[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        return total / max(len(order), 1)

    return train_epoch


def feature_evaluator(head, x_va, y_va: np.ndarray, loss_fn, n_classes: int):
    """Validation loss, accuracy and macro-F1 of `head` on fixed features x_va (all in memory)."""
    xv, yv = torch.as_tensor(np.ascontiguousarray(x_va, np.float32)), torch.from_numpy(y_va)

    @torch.no_grad()
    def evaluate() -> dict:
        if len(yv) == 0:
            return no_validation()
        head.eval()
        logits = head(xv)
        return {"loss": float(loss_fn(logits, yv)), **scores(y_va, logits.argmax(1).numpy(), n_classes)}

    return evaluate
