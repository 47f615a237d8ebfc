"""Finetune mode (the CUDA default): stage 1 trains the head on a frozen backbone, stage 2
unfreezes the last N blocks (or all) with the backbone at `backbone_lr_mult` of the head's LR.
Images are decoded by DataLoader workers; augmentation seeds depend on (image, epoch, seed), so a
CPU run is repeatable whatever the worker count. AMP and channels_last on CUDA.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from classification import distributed
from classification.context import FitContext
from classification.data import ImageSet
from classification.datasets import ImageDataset, make_loader, view_seed
from classification.losses import create_loss
from classification.metrics import no_validation, scores
from classification.models import classifier_module, frozen_part
from classification.train.optimizers import create_optimizer
from classification.train.rotation import ATTR as ROTATION_HEAD
from classification.train.rotation import JointLoss, RotationNet, forward_eval, rotation_head, split_outputs
from classification.train.stage import Stage, run_stage
from classification.transforms import create_transform

if TYPE_CHECKING:
    from classification.config import TrainConfig


def fit_finetune(ctx: FitContext, train: ImageSet, val: ImageSet, strong: np.ndarray, sample_weight: np.ndarray):
    """Stage 1 (head only), then stage 2 (unfrozen backbone); returns (history, best epoch's
    record, skipped files)."""
    model, cfg = ctx.model, ctx.cfg
    model.to(device=ctx.device, memory_format=torch.channels_last)
    loss_fn = create_loss(cfg.loss, cfg.label_smoothing)
    head, rot_head = classifier_module(model), rotation_head(model)
    heads = [head] + ([rot_head] if rot_head is not None else [])
    # with aux_rotation the step runs the batch and its rotated copy (classification/train/rotation.py)
    net = RotationNet(frozen_part(model), head, rot_head, cfg.seed) if rot_head is not None else model
    train_loss = JointLoss(loss_fn, cfg.aux_weight) if rot_head is not None else loss_fn
    tf = {k: create_transform(k, ctx.data_cfg, cfg.n_ops) for k in ("eval", "weak", "strong")}
    epochs = _Epochs(ctx, net, (train, strong, sample_weight), tf, train_loss)
    evaluate = _evaluator(net, val, tf["eval"], cfg, ctx.device, loss_fn)
    history: list[dict] = []
    _freeze_backbone(model, heads)
    optimizer = cfg.resolved_optimizer("finetune")
    head_params = [p for h in heads for p in h.parameters()]
    opt = create_optimizer(optimizer, [{"params": head_params, "lr": cfg.lr}], cfg.weight_decay)
    best = run_stage(ctx, model, Stage("stage1", cfg.stage1_epochs, epochs.for_stage(0, opt), evaluate, opt),
                     history)
    if cfg.stage2_epochs:
        backbone = _unfreeze(model, cfg.unfreeze_blocks)
        opt = create_optimizer(optimizer, [{"params": head_params, "lr": cfg.lr},
                                           {"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult}],
                               cfg.weight_decay)
        stage = Stage("stage2", cfg.stage2_epochs, epochs.for_stage(cfg.stage1_epochs, opt), evaluate, opt)
        best = run_stage(ctx, model, stage, history)
    skipped = [s for part in distributed.gather(epochs.skipped) or [] for s in part]
    return history, best, skipped


class _Epochs:
    """Training epochs on decoded images: weak views for human labels, strong for pseudo-labels,
    AMP on CUDA, under DistributedDataParallel with torchrun. `net` is the model, or with
    aux_rotation its `RotationNet` (then `loss_fn` is a `JointLoss` and an epoch returns a record)."""

    def __init__(self, ctx: FitContext, net: nn.Module, data: tuple[ImageSet, np.ndarray, np.ndarray],
                 tf: dict, loss_fn):
        train, strong, sample_weight = data
        self.ctx, self.net, self.train, self.strong, self.tf, self.loss_fn = ctx, net, train, strong, tf, loss_fn
        self.labels, self.weights = torch.from_numpy(train.labels), torch.from_numpy(sample_weight)
        self.scaler = torch.amp.GradScaler("cuda", enabled=ctx.device.startswith("cuda"))
        self.skipped: list[tuple[str, str]] = []

    def for_stage(self, stage_offset: int, opt):
        """The stage's `train_epoch(epoch)`: its epochs are numbered from `stage_offset` for the
        augmentation seeds, so stage 2 never repeats stage 1's views."""
        net = _wrap(self.net, self.ctx.device)  # DistributedDataParallel under torchrun, else the net

        def train_epoch(epoch: int) -> float:
            _train_mode(self.ctx.model)
            loader = _train_loader(self.train, self.strong, self.tf, self.ctx.cfg, stage_offset + epoch)
            total, total_w = 0.0, 0.0
            for idx, x, bad in loader:
                self.skipped.extend((self.train.paths[i], why) for i, why in bad if epoch == 0)
                batch_w, batch_loss = self._step(net, opt, idx, x)
                total, total_w = total + batch_loss, total_w + batch_w
            return total / max(total_w, 1e-12)

        return self.loss_fn.epochs(train_epoch) if isinstance(self.loss_fn, JointLoss) else train_epoch

    def _step(self, net, opt, idx, x) -> tuple[float, float]:
        """One optimiser step on a batch; (its weight, its weighted loss) summed over the ranks."""
        device, size = self.ctx.device, self.ctx.data_cfg.size
        cuda = device.startswith("cuda")
        x = (x[:, 0] if x is not None else torch.zeros(1, 3, size, size))
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y, w = self.labels[idx].to(device), self.weights[idx].to(device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
            logits = net(x).float()
        # a rank with no decodable image in this batch still joins the gradient sync
        local = self.loss_fn(logits, y, w) * w.sum() if len(idx) else logits.sum() * 0.0
        batch_w, batch_loss = distributed.all_sum(float(w.sum()), float(local.detach()))
        # the global batch's weighted mean; DDP averages the ranks' gradients, hence * world
        loss = local * (distributed.world_size() / max(batch_w, 1e-12))
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()
        return batch_w, batch_loss


def _train_mode(model: nn.Module) -> None:
    """Training mode, but with the pretrained BatchNorm statistics, and in stage 1 (nothing but the
    head trains) the backbone in eval mode."""
    model.train()
    _freeze_batchnorm(model)
    if not any(p.requires_grad for n, p in model.named_parameters() if not _is_head(model, n)):
        model.eval()
        classifier_module(model).train()


def _train_loader(train: ImageSet, strong: np.ndarray, tf: dict, cfg: TrainConfig, epoch: int):
    """A loader for one epoch: weak views for human labels, strong for pseudo-labels. The epoch's
    permutation and batches are global; each rank takes every world_size()-th image of each batch,
    so the union of the ranks' batches is the single-process batch."""
    parts = []
    for kind, mask in (("weak", ~strong), ("strong", strong)):
        idx = np.flatnonzero(mask)
        if len(idx):
            seeds = [[view_seed(train.hashes[i], epoch, cfg.seed)] for i in idx]
            parts.append(_Indexed(ImageDataset([train.paths[i] for i in idx], tf[kind], seeds), idx))
    dataset = torch.utils.data.ConcatDataset(parts)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
    batches = [distributed.shard(order[s:s + cfg.batch_size]) for s in range(0, len(order), cfg.batch_size)]
    return make_loader(dataset, cfg.batch_size, cfg.workers, batches=batches)


def _wrap(model: nn.Module, device: str) -> nn.Module:
    """DistributedDataParallel over the parameters that train now (rebuilt per stage)."""
    if not distributed.active():
        return model
    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _freeze_batchnorm(model: nn.Module) -> None:
    """Keep the pretrained BatchNorm statistics: a few images per batch (per GPU) would make them
    noisy, and frozen statistics make a run independent of the number of processes."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class _Indexed(torch.utils.data.Dataset):
    """Maps a sub-dataset's positions back to rows of the full training set."""

    def __init__(self, dataset: ImageDataset, rows: np.ndarray):
        self.dataset, self.rows = dataset, rows

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        _, x, why = self.dataset[i]
        return int(self.rows[i]), x, why


def _evaluator(net, val: ImageSet, transform, cfg: TrainConfig, device: str, loss_fn):
    """Validation on the eval view; a `RotationNet` also scores the rotation head (`rot_*`)."""
    loader_args = (ImageDataset(val.paths, transform), cfg.batch_size, cfg.workers)

    @torch.no_grad()
    def evaluate() -> dict:
        if len(val) == 0:
            return no_validation()
        net.eval()
        outs, rows = [], []
        for idx, x, _ in make_loader(*loader_args):
            if x is not None:
                x = x[:, 0].to(device).contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=device.startswith("cuda")):
                    outs.append(forward_eval(net, x, idx).float())
                rows.append(idx)
        if not outs:
            return no_validation()
        (logits, rot), y = split_outputs(outs), torch.from_numpy(val.labels[torch.cat(rows).numpy()])
        logits = logits.cpu()
        return {"loss": float(loss_fn(logits, y)), **scores(y.numpy(), logits.argmax(1).numpy(),
                                                            len(val.classes)), **rot}

    return evaluate


def _is_head(model: nn.Module, name: str) -> bool:
    """The class head's or the rotation head's parameter: they train from stage 1 at the head LR."""
    return name.split(".")[0] in (model.pretrained_cfg.get("classifier", "classifier"), ROTATION_HEAD)


def _freeze_backbone(model: nn.Module, heads: list[nn.Module]) -> None:
    for p in model.parameters():
        p.requires_grad = False
    for p in (p for h in heads for p in h.parameters()):
        p.requires_grad = True


def _unfreeze(model: nn.Module, last_blocks: int) -> list[nn.Parameter]:
    """Unfreeze all backbone layers, or the last N blocks plus what follows them."""
    if last_blocks < 0 or not hasattr(model, "blocks"):
        modules = [m for n, m in model.named_children() if not _is_head(model, n)]
    else:
        blocks = list(model.blocks)
        tail = [m for n, m in model.named_children() if n in ("conv_head", "bn2", "norm", "head_norm")]
        modules = blocks[len(blocks) - last_blocks:] + tail
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad = True
    return params
