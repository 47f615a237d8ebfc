"""Seed 001's MultiHeadNet: beside the class head, a small linear head on the same pooled
features predicts how its input was rotated (0, 90, 180 or 270 degrees): `TrainConfig.aux_rotation`.

Predicting the rotation needs no label, so every training image, pseudo-labelled or not, teaches
the backbone about the orientation of its objects (Gidaris et al. 2018, "Unsupervised
representation learning by predicting image rotations"). Each training batch is run together with
a copy of itself in which each image is turned by a random multiple of 90 degrees (`torch.rot90`
of the decoded tensor: nothing is decoded twice). The class loss is taken on the upright half only,
so the class head keeps training on what it will see at prediction time, and the rotation loss on
the turned half, added with weight `aux_weight`. That doubles the compute of a training step.

Finetune mode rotates the images. Tail mode (head mode with `tail_blocks`) has only the cached
feature maps entering the tail, and rotates those: a cheap proxy, not the same thing. A rotated
map is not the map of the rotated image (the trunk's filters and TensorFlow "same" padding are not
rotation-symmetric, and their traces at the map's edges turn with it, which makes the task easier
than on images); but it costs no extra pass through the trunk, where rotating the images would
mean caching the trunk's maps for every rotation of every view. Head mode (cached pooled features)
has nothing left to rotate and refuses the option.

The head lives on the model as `model.rotation_head`, so checkpoints hold it and `run_stage`
restores it with the best epoch; prediction never calls it.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

ATTR = "rotation_head"   # the model attribute that holds the head
N_ROTATIONS = 4          # 0, 90, 180, 270 degrees
NAMES = ["0°", "90°", "180°", "270°"]


def attach_rotation_head(model: nn.Module) -> nn.Module:
    """Put a fresh, zero-initialised Linear(num_features, 4) on `model` as `model.rotation_head`
    (zero, like the class head: the start carries no random preference)."""
    head = nn.Linear(model.num_features, N_ROTATIONS)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    setattr(model, ATTR, head)
    return head


def rotation_head(model: nn.Module) -> nn.Module | None:
    """The model's rotation head, or None when it was trained without one."""
    return getattr(model, ATTR, None)


def rotate(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Each x[i] (C, H, W) turned rotations[i] quarter turns counter-clockwise (square H, W)."""
    assert x.shape[-1] == x.shape[-2], f"rotation needs square inputs, got {tuple(x.shape)}"
    out = x.clone()
    for k in range(1, N_ROTATIONS):
        picked = rotations == k
        if picked.any():
            out[picked] = torch.rot90(x[picked], k, dims=(-2, -1))
    return out


def eval_rotations(rows: torch.Tensor) -> torch.Tensor:
    """The rotation each validation image is scored under: its row modulo 4, fixed across epochs
    and balanced, so one epoch's rotation confusion compares with the next."""
    return torch.as_tensor(rows).long() % N_ROTATIONS


class Joint(NamedTuple):
    """What a `RotationNet` returns for a batch of B images."""
    logits: torch.Tensor      # (B, classes): the class head on the upright images
    rot_logits: torch.Tensor  # (B, 4): the rotation head on the rotated copies
    rotations: torch.Tensor   # (B,): the quarter turns applied

    def float(self) -> "Joint":
        """Both logits as float32 (out of autocast), so a training step treats it like logits."""
        return Joint(self.logits.float(), self.rot_logits.float(), self.rotations)

    def sum(self) -> torch.Tensor:
        """A sum over both heads' outputs: a rank with no image in its batch still joins the
        gradient sync of every trainable weight (finetune mode's DistributedDataParallel)."""
        return self.logits.sum() + self.rot_logits.sum()


class RotationNet(nn.Module):
    """`features` (images or cached maps -> pooled features) under the class `head` and the
    rotation head: one forward pass over the batch and its rotated copy."""

    def __init__(self, features: nn.Module, head: nn.Module, rot_head: nn.Module, seed: int):
        super().__init__()
        self.features, self.head, self.rot_head = features, head, rot_head
        self.gen = torch.Generator().manual_seed(seed)  # the training rotations, repeatable

    def forward(self, x: torch.Tensor, rotations: torch.Tensor | None = None) -> Joint:
        if rotations is None:
            rotations = torch.randint(N_ROTATIONS, (len(x),), generator=self.gen)
        rotations = rotations.to(x.device)
        feats = self.features(torch.cat([x, rotate(x, rotations)]))
        return Joint(self.head(feats[:len(x)]), self.rot_head(feats[len(x):]), rotations)


class JointLoss:
    """The class loss on the upright half plus `weight` times the rotation cross-entropy on the
    rotated half (unweighted: a rotation label is exact, whoever labelled the image). Keeps the
    epoch's rotation loss and accuracy for its history record."""

    def __init__(self, loss_fn, weight: float):
        self.loss_fn, self.weight = loss_fn, weight
        self.totals = np.zeros(3)  # rotation loss sum, correct, images

    def __call__(self, out: Joint, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        rot = nn.functional.cross_entropy(out.rot_logits.float(), out.rotations)
        n = len(out.rotations)
        correct = float((out.rot_logits.argmax(1) == out.rotations).sum())
        self.totals += (float(rot.detach()) * n, correct, n)
        return self.loss_fn(out.logits.float(), y, w) + self.weight * rot

    def record(self, train_loss: float) -> dict:
        """The epoch's training record (`run_stage` prefixes `train_`): `loss` is the total the
        optimiser saw (class + weight x rotation), `rot_*` the rotation part; starts the next epoch.
        Under torchrun the rotation numbers are this rank's."""
        loss_sum, correct, n = self.totals.tolist()
        self.totals = np.zeros(3)
        return {"loss": train_loss, "rot_loss": loss_sum / max(n, 1), "rot_accuracy": correct / max(n, 1)}

    def epochs(self, train_epoch):
        """`train_epoch` (returning its mean loss) made to return the epoch's record."""
        return lambda epoch: self.record(train_epoch(epoch))


def rotation_scores(rot_logits: torch.Tensor, rotations: torch.Tensor) -> dict:
    """Validation loss, accuracy and the 4 x 4 confusion (rows: applied, columns: predicted)."""
    rot_logits, rotations = rot_logits.float().cpu(), rotations.cpu().long()
    pred = rot_logits.argmax(1)
    confusion = torch.zeros(N_ROTATIONS, N_ROTATIONS, dtype=torch.long)
    confusion.index_put_((rotations, pred), torch.ones_like(pred), accumulate=True)
    return {"rot_loss": float(nn.functional.cross_entropy(rot_logits, rotations)),
            "rot_accuracy": float((pred == rotations).float().mean()), "rot_confusion": confusion.tolist()}


def split_outputs(outs: list) -> tuple[torch.Tensor, dict]:
    """Class logits of a validation pass's outputs (tensors, or `Joint`s with aux_rotation), and
    the rotation scores when there are any."""
    if not outs or not isinstance(outs[0], Joint):
        return torch.cat(outs), {}
    logits = torch.cat([o.logits.float().cpu() for o in outs])
    return logits, rotation_scores(torch.cat([o.rot_logits for o in outs]), torch.cat([o.rotations for o in outs]))


def forward_eval(net: nn.Module, x: torch.Tensor, rows) -> torch.Tensor | Joint:
    """`net(x)` for validation; a `RotationNet` turns each image by its `eval_rotations(rows)`."""
    return net(x, eval_rotations(rows)) if isinstance(net, RotationNet) else net(x)


def rotation_summary(best: dict) -> dict:
    """{"rotation": its validation loss, accuracy and confusion at the best epoch} for a run's
    metrics.json, or {} without a rotation head (or without validation)."""
    if best.get("val_rot_confusion") is None:
        return {}
    return {"rotation": {"val_loss": best["val_rot_loss"], "val_accuracy": best["val_rot_accuracy"],
                         "confusion": best["val_rot_confusion"], "labels": NAMES}}


def rotation_png(best: dict, path: str | Path) -> Path | None:
    """The rotation head's confusion on the validation split at the best epoch (`FitResult.best`),
    as a picture beside the class confusion matrix; None when that record has none (trained
    without aux_rotation, or without a validation split)."""
    from classification.metrics import confusion_matrix_png

    cm = best.get("val_rot_confusion")
    if cm is None:
        return None
    title = f"Rotation head, validation split ({best['stage']} epoch {best['epoch']})"
    return confusion_matrix_png(np.asarray(cm), NAMES, path, title=title)
