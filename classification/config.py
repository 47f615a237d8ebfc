"""Training configuration: one frozen dataclass, validated on construction.

Names are checked against the registries themselves (`MODES`, `HEADS`, `LOSSES`, `OPTIMIZERS`,
`RUNTIMES`), none of which loads torch, so checking a config stays cheap.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from classification import heads, losses
from classification import runtime as runtimes
from classification.errors import InputError, brief
from classification.registry import check_name
from classification.train import modes, optimizers

DEFAULT_MODEL = "tf_efficientnet_lite0"  # the default backbone; its ImageNet weights ship with the package
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class TrainConfig:
    model: str = DEFAULT_MODEL          # any timm model name
    weights: str | None = "auto"        # state-dict file, "auto" (packaged), "hub" (download), None (random)
    img_size: int | None = None         # None: the model's own input size
    mode: str = "auto"                  # MODES: head (frozen backbone, cached features) | finetune
                                        # | auto (finetune on CUDA)
    head: str = "linear"                # HEADS: linear | mlp
    hidden: int = 512                   # width of the mlp head
    feature_norm: bool = True           # the head sees sqrt -> L2 -> centred -> L2 features
                                        # (classification/featurenorm.py); +2 points with 4 labels/class
    loss: str = "ce"                    # LOSSES: ce | bce (one-hot) | focal
    label_smoothing: float = 0.0        # for ce and bce; 0.1 is common when labels are plenty
    optimizer: str = "auto"             # auto (lbfgs for a linear head on cached features, else adamw)
                                        # | OPTIMIZERS: adamw | sgd (momentum 0.9) | lbfgs (head mode, full batch)
    l2: float = 0.01                    # lbfgs: L2 penalty on the head weights, on the mean-loss scale
    lr: float = 3e-3                    # head learning rate; the backbone gets lr * backbone_lr_mult
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 60                    # head mode; an epoch is one pass over the training set
    val_fraction: float = 0.2           # share of human labels held out for validation (per class)
    refit: bool = True                  # head mode: once validation has picked the epoch count, retrain
                                        # the head on train + val for that many epochs (few labels are
                                        # too precious to leave out); reported val metrics stay honest
    patience: int = 5                   # early stopping on validation loss (seed defaults)
    min_delta: float = 0.001
    plateau_factor: float = 0.15        # ReduceLROnPlateau on validation loss
    plateau_patience: int = 2
    n_views: int = 4                    # head mode: cached augmented views per image, one sampled per epoch
    augment_human: bool = False         # head mode: also train on weak views of human labels; off by
                                        # default: with a few labels it cost 3 points on cifar10_bench
    n_ops: int = 2                      # RandAugment ops per strong view
    tail_blocks: int = 0                # head mode: also train the last N backbone blocks, on cached
                                        # feature maps of the blocks before them (0: head only)
    tail_epochs: int = 4                # head mode with tail_blocks: epochs of minibatch AdamW
    stage1_epochs: int = 3              # finetune: head only
    stage2_epochs: int = 10             # finetune: unfrozen backbone
    unfreeze_blocks: int = -1           # finetune stage 2: last N blocks, -1 = all
    backbone_lr_mult: float = 0.1
    aux_rotation: bool = False          # seed 001's MultiHeadNet: a second head learns the rotation (0/90/180/270)
                                        # of each training image (finetune; tail: of its cached map);
                                        # classification/train/rotation.py. Not in head mode
    aux_weight: float = 0.5             # the rotation loss's weight, added to the class loss
    workers: int | None = None          # DataLoader decoding workers; None: cores - 1
    device: str = "auto"                # auto | cpu | cuda[:i]
    runtime: str = "auto"               # backbone runtime for features: auto (onnx on CPU, torch on CUDA)
                                        # | RUNTIMES: onnx | torch
    seed: int = 0

    def __post_init__(self):
        check_field_types(self)
        check_name("mode", self.mode, ("auto", *modes.MODES))
        check_name("optimizer", self.optimizer, ("auto", *optimizers.OPTIMIZERS))
        check_name("loss", self.loss, losses.LOSSES)
        check_name("head", self.head, heads.HEADS)
        check_positive(self, ("lr", "batch_size", "hidden"))
        check_non_negative(self, ("epochs", "stage1_epochs", "stage2_epochs", "n_views", "patience",
                                  "tail_blocks", "tail_epochs"))
        if self.img_size is not None and self.img_size < 16:
            raise InputError(f"img_size must be at least 16, got {self.img_size}")
        if not 0 <= self.label_smoothing < 1:
            raise InputError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.workers is not None and self.workers < 0:
            raise InputError(f"workers must be >= 0 (or unset for cores - 1), got {self.workers}")
        check_name("runtime", self.runtime, ("auto", *runtimes.RUNTIMES))
        if not 0 <= self.seed < 2**32:  # numpy's and torch's seeding range
            raise InputError(f"seed must be in [0, 2**32), got {self.seed}")
        if not DEVICE.fullmatch(self.device):
            raise InputError(f"unknown device {self.device!r}; valid: auto, cpu, cuda, cuda:N")
        if self.aux_weight < 0:
            raise InputError(f"aux_weight must be >= 0, got {self.aux_weight}")
        if self.mode != "auto":
            self._check_aux_rotation(self.mode)

    def resolved_optimizer(self, mode: str) -> str:
        if self.optimizer == "lbfgs" and mode != "head":
            raise InputError("optimizer lbfgs needs head mode (full-batch training on cached features)")
        if self.optimizer != "auto":
            return self.optimizer
        return "lbfgs" if mode == "head" and self.head == "linear" else "adamw"

    def resolved_mode(self, device: str) -> str:
        mode = self.mode if self.mode != "auto" else "finetune" if device.startswith("cuda") else "head"
        self._check_aux_rotation(mode)
        return mode

    def _check_aux_rotation(self, mode: str) -> None:
        # head mode trains on cached pooled features: there is no image or map left to rotate
        if self.aux_rotation and mode == "head" and not self.tail_blocks:
            raise InputError("aux_rotation needs mode finetune, or mode head with tail_blocks >= 1 (tail); "
                             "plain head mode trains on cached pooled features, which cannot be rotated")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown train setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device} requested but CUDA is not available; use --device cpu")
    return device


def read_config_sections(path: str | Path, sections: dict[str, type]) -> dict[str, dict]:
    """Read a YAML config (safe loader) made of the named sections, each checked against the fields
    of its config dataclass: {section: raw dict}, empty for an absent section; unknown keys are errors."""
    from classification.yamlfile import read_yaml

    raw = read_yaml(path) or {}
    if not isinstance(raw, dict) or not set(raw) <= set(sections):
        names = " and ".join(f"{name}:" for name in sections)
        raise InputError(f"config {path} must be a mapping with section{'s' * (len(sections) > 1)} {names}")
    out = {}
    for name, cls in sections.items():
        section = raw.get(name) or {}
        valid = {f.name for f in fields(cls)}
        # keys may be any YAML scalar (1, true, null): compare and list them as text
        unknown = (sorted(str(k) for k in section if k not in valid) if isinstance(section, dict)
                   else ["<not a mapping>"])
        if unknown:
            raise InputError(f"config {path}: unknown {name} key(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(valid))}")
        out[name] = section
    return out


def check_positive(config, names: tuple[str, ...]) -> None:
    """Refuse a config whose fields `names` are not all > 0."""
    for name in names:
        if getattr(config, name) <= 0:
            raise InputError(f"{name} must be positive, got {getattr(config, name)}")


def check_non_negative(config, names: tuple[str, ...]) -> None:
    """Refuse a config whose fields `names` are not all >= 0."""
    for name in names:
        if getattr(config, name) < 0:
            raise InputError(f"{name} must be >= 0, got {getattr(config, name)}")


def check_field_types(config) -> None:
    """Check every field of a frozen config dataclass against its annotation (`int`, `float`,
    `str`, `bool`, `X | None`), so a YAML `lr: fast` or `n_trials: 1.5` is a one-line error here
    rather than a TypeError deep in training. Numbers are stored as Python int/float: whole floats
    become ints (`epochs: 10.0`), ints become floats, numpy scalars become builtins.
    """
    for f in fields(config):
        value = getattr(config, f.name)
        kinds = [k.strip() for k in str(f.type).split("|")]
        if value is None and "None" in kinds:
            continue
        for kind in kinds:
            ok, converted = _as_kind(kind, value)
            if ok:
                if converted is not value:
                    object.__setattr__(config, f.name, converted)
                break
        else:
            if not any(k in _KIND_NAMES for k in kinds):
                continue  # an annotation this check does not know: leave it to the field's own checks
            wanted = " or ".join(_KIND_NAMES.get(k, k) for k in kinds)
            raise InputError(f"{f.name} must be {wanted}, got {brief(value)}")


_KIND_NAMES = {"int": "an integer", "float": "a finite number", "str": "a string", "bool": "true or false",
               "None": "null"}


def _as_kind(kind: str, value) -> tuple[bool, object]:
    if isinstance(value, bool) or kind == "bool":  # bool is an int subclass, but `epochs: true` is a slip
        return (kind == "bool" and isinstance(value, bool)), value
    if kind == "int" and isinstance(value, numbers.Integral):
        return True, int(value)
    if kind == "int" and isinstance(value, numbers.Real) and _finite(value) and value == int(value):
        return True, int(value)
    if kind == "float" and isinstance(value, numbers.Real) and _finite(value):
        return True, float(value)
    if kind == "str" and isinstance(value, str):
        return True, value
    return False, value


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False

