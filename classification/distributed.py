"""Running under `torchrun`: PyTorch's own process groups, nothing home-made.

`torchrun --nproc_per_node N -m autolabel ...` starts N processes with RANK / WORLD_SIZE /
MASTER_ADDR set; `init_from_env()` joins them into one group (gloo on CPU, nccl on CUDA). Inside
`collective()`, every rank runs the same loop and:
  - feature extraction splits the images the cache lacks by rank (`shard`) and gathers the
    features on rank 0, which alone writes them to the cache (`features._extract_across_ranks`);
  - finetune mode trains with DistributedDataParallel, each rank taking its slice of every global
    batch, so the optimisation is the single-process one (train/finetune.py);
  - rank 0 alone trains a head (`on_main`, train/head.py), decides the pseudo-labels, writes
    outputs and logs to MLflow (autolabel), and `broadcast`s what the other ranks need to stay in
    step.
Without torchrun (or outside `collective()`) every function here is a no-op for one process.
"""
from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist

_STATE = {"collective": False}


def init_from_env() -> bool:
    """Join the torchrun process group if WORLD_SIZE > 1; True if this is a distributed run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=60))
    return True


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    """True inside `collective()` of a run with more than one process."""
    return _STATE["collective"] and world_size() > 1


@contextlib.contextmanager
def collective():
    """Every rank runs this block's extraction, training and predictions together."""
    before, _STATE["collective"] = _STATE["collective"], True
    try:
        yield
    finally:
        _STATE["collective"] = before


def broadcast(obj):
    """Rank 0's `obj` on every rank (the others pass anything, usually None)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn):
    """`fn()` run by rank 0 alone, its result on every rank (in one process, simply `fn()`)."""
    return broadcast(fn() if is_main() or not active() else None)


def gather(obj) -> list | None:
    """Every rank's `obj`, in rank order, on rank 0; None on the others."""
    if not active():
        return [obj]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_sum(*values: float) -> list[float]:
    """Each value summed over the ranks (the values themselves for one process)."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def shard(items):
    """This rank's share of `items`: every world_size()-th one from its rank."""
    return items[rank()::world_size()] if active() else items
