"""Finetune mode (the CUDA default): stage 1 trains the head on a frozen backbone, stage 2
unfreezes the last N blocks (or all) with the backbone at `backbone_lr_mult` of the head's LR.
Images are decoded by DataLoader workers; augmentation seeds depend on (image, epoch, seed), so a
CPU run is repeatable whatever the worker count. AMP and channels_last on CUDA.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from classification import distributed
from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.data import ImageSet
from classification.datasets import ImageDataset, make_loader, view_seed
from classification.losses import create_loss
from classification.metrics import no_validation, scores
from classification.models import classifier_module
from classification.trainer import create_optimizer, run_stage
from classification.transforms import create_transform


def fit_finetune(model: nn.Module, cfg: TrainConfig, data_cfg, train: ImageSet, val: ImageSet,
                 cache: FeatureCache, strong, sample_weight, device, progress, on_epoch):
    cuda = device.startswith("cuda")
    model.to(device=device, memory_format=torch.channels_last)
    loss_fn = create_loss(cfg.loss, cfg.label_smoothing)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    head = classifier_module(model)
    tf = {k: create_transform(k, data_cfg, cfg.n_ops) for k in ("eval", "weak", "strong")}
    labels = torch.from_numpy(train.labels)
    weights = torch.from_numpy(sample_weight)
    skipped: list[tuple[str, str]] = []

    def train_epoch_for(stage_offset: int):
        net = _wrap(model, device)  # DistributedDataParallel under torchrun, else the model itself

        def train_epoch(epoch: int) -> float:
            model.train()
            _freeze_batchnorm(model)
            if not any(p.requires_grad for n, p in model.named_parameters() if not _is_head(model, n)):
                model.eval()  # stage 1: nothing but the head trains
                head.train()
            loader = _train_loader(train, strong, tf, cfg, stage_offset + epoch)
            total, total_w = 0.0, 0.0
            for idx, x, bad in loader:
                skipped.extend((train.paths[i], why) for i, why in bad if epoch == 0)
                x = (x[:, 0] if x is not None else torch.zeros(1, 3, data_cfg.size, data_cfg.size))
                x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                y, w = labels[idx].to(device), weights[idx].to(device)
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
                    logits = net(x).float()
                # a rank with no decodable image in this batch still joins the gradient sync
                local = loss_fn(logits, y, w) * w.sum() if len(idx) else logits.sum() * 0.0
                batch_w, batch_loss = distributed.all_sum(float(w.sum()), float(local.detach()))
                # the global batch's weighted mean; DDP averages the ranks' gradients, hence * world
                loss = local * (distributed.world_size() / max(batch_w, 1e-12))
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                total, total_w = total + batch_loss, total_w + batch_w
            return total / max(total_w, 1e-12)
        return train_epoch

    evaluate = _evaluator(model, val, tf["eval"], cfg, device, loss_fn)
    history: list[dict] = []
    _freeze_backbone(model, head)
    optimizer = cfg.resolved_optimizer("finetune")
    opt = create_optimizer(optimizer, [{"params": head.parameters(), "lr": cfg.lr}], cfg.weight_decay)
    best = run_stage(model, train_epoch_for(0), evaluate, opt, cfg.stage1_epochs, cfg, "stage1",
                     history, on_epoch, progress)
    if cfg.stage2_epochs:
        backbone = _unfreeze(model, head, cfg.unfreeze_blocks)
        opt = create_optimizer(optimizer, [{"params": head.parameters(), "lr": cfg.lr},
                                               {"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult}],
                               cfg.weight_decay)
        best = run_stage(model, train_epoch_for(cfg.stage1_epochs), evaluate, opt, cfg.stage2_epochs,
                         cfg, "stage2", history, on_epoch, progress)
    skipped = [s for part in distributed.gather(skipped) or [] for s in part]
    return history, best, skipped


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


def _evaluator(model, val: ImageSet, transform, cfg: TrainConfig, device: str, loss_fn):
    loader_args = (ImageDataset(val.paths, transform), cfg.batch_size, cfg.workers)

    @torch.no_grad()
    def evaluate() -> dict:
        if len(val) == 0:
            return no_validation()
        model.eval()
        logits, rows = [], []
        for idx, x, _ in make_loader(*loader_args):
            if x is not None:
                x = x[:, 0].to(device).contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=device.startswith("cuda")):
                    logits.append(model(x).float().cpu())
                rows.append(idx)
        if not logits:
            return no_validation()
        logits, y = torch.cat(logits), torch.from_numpy(val.labels[torch.cat(rows).numpy()])
        return {"loss": float(loss_fn(logits, y)), **scores(y.numpy(), logits.argmax(1).numpy(),
                                                            len(val.classes))}

    return evaluate


def _is_head(model: nn.Module, name: str) -> bool:
    return name.split(".")[0] == model.pretrained_cfg.get("classifier", "classifier")


def _freeze_backbone(model: nn.Module, head: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad = False
    for p in head.parameters():
        p.requires_grad = True


def _unfreeze(model: nn.Module, head: nn.Module, last_blocks: int) -> list[nn.Parameter]:
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
