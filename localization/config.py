"""Versioned localisation configs: frozen dataclasses, one per concern, as seed 003 versioned its
model, augmentation, criterion, optimiser and scheduler. `configs/localize/vN.yaml` files hold
the versions; every run records its version and the resolved config. The CLI reads the YAML once
and overrides it with flags; the library only ever sees a `LocalizeConfig`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from classification.config import check_field_types, check_non_negative, check_positive
from classification.errors import InputError
from classification.losses import LOSSES
from classification.registry import check_name
from classification.runtime import RUNTIMES
from classification.yamlfile import read_yaml
from localization.boxes import RESIZES

# The registries' keys, kept here so that checking a config does not import torch (a test
# checks that they match the registries themselves).
BOX_HEADS = ("spatial", "pooled", "edges")             # localization.model.BOX_HEADS
AUGMENTATIONS = ("none", "flip", "light", "medium", "strong")  # localization.views.AUGMENTATIONS
OPTIMIZERS = ("adam", "adamw", "sgd")           # localization.train.OPTIMIZERS
SCHEDULERS = ("plateau", "cosine", "none")      # localization.train.SCHEDULERS


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tf_efficientnet_lite0"  # timm backbone; EfficientNet/MobileNet-style for unfreeze > 0
    weights: str | None = "auto"         # auto (packaged ImageNet) | hub (download) | a state-dict file | null
    img_size: int = 320                  # side of the square model input
    box_head: str = "edges"              # edges (soft-argmax per edge) | spatial (MLP over the grid) | pooled
    hidden: int = 64                     # width of the box head's hidden layer
    dropout: float = 0.2                 # before the class layer and inside the box head

    def __post_init__(self):
        check_field_types(self)
        check_name("box_head", self.box_head, BOX_HEADS)
        check_positive(self, ("hidden",))
        if self.img_size < 32:
            raise InputError(f"img_size must be at least 32, got {self.img_size}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class AugmentationConfig:
    resize: str = "letterbox"   # letterbox (longest side, then pad: seed 003's fix) | stretch
    name: str = "medium"        # none | flip | light | medium | strong (localization.views)
    views: int = 8              # augmented views cached per training image; each epoch draws one

    def __post_init__(self):
        check_field_types(self)
        check_name("resize", self.resize, RESIZES)
        check_name("augmentation", self.name, AUGMENTATIONS)
        check_non_negative(self, ("views",))


@dataclass(frozen=True)
class CriterionConfig:
    class_loss: str = "ce"      # ce | bce (one-hot) | focal: classification.losses
    box_weight: float = 100.0   # smooth-L1 on normalised corners is small; seed 003 went 75 -> 1,000
    giou_weight: float = 0.0    # add GIoU loss x this (0: off)
    beta: float = 0.05          # smooth-L1 switches from quadratic to linear at this error

    def __post_init__(self):
        check_field_types(self)
        check_name("class_loss", self.class_loss, LOSSES)
        check_non_negative(self, ("box_weight", "giou_weight"))
        check_positive(self, ("beta",))


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"             # adam | adamw | sgd (momentum 0.9)
    lr: float = 1e-3               # heads
    backbone_lr_mult: float = 0.1  # unfrozen blocks train at lr x this
    weight_decay: float = 0.0

    def __post_init__(self):
        check_field_types(self)
        check_name("optimizer", self.name, OPTIMIZERS)
        check_positive(self, ("lr", "backbone_lr_mult"))
        check_non_negative(self, ("weight_decay",))


@dataclass(frozen=True)
class SchedulerConfig:
    name: str = "plateau"   # plateau (ReduceLROnPlateau on validation mean IoU) | cosine | none
    factor: float = 0.3     # plateau: LR x this after `patience` epochs without a better mean IoU
    patience: int = 2

    def __post_init__(self):
        check_field_types(self)
        check_name("scheduler", self.name, SCHEDULERS)
        if not 0 < self.factor < 1:
            raise InputError(f"scheduler factor must be in (0, 1), got {self.factor}")
        check_non_negative(self, ("patience",))


@dataclass(frozen=True)
class TrainingConfig:
    head_epochs: int = 45        # stage 1: the heads only, on a frozen backbone
    epochs: int = 8              # stage 2: the last `unfreeze` blocks too (skipped when unfreeze = 0)
    unfreeze: int = 0            # blocks (timm stages) trained in stage 2; 0: heads only
    patience: int = 10           # early stopping: epochs without a better validation mean IoU
    val_fraction: float = 0.2    # images with boxes held out per class to pick the best epoch
    batch_size: int = 32
    runtime: str = "auto"        # frozen trunk: auto (ONNX Runtime on CPU) | onnx | torch
    workers: int | None = None   # decoding processes; null: cores - 1
    seed: int = 0

    def __post_init__(self):
        check_field_types(self)
        check_non_negative(self, ("head_epochs", "epochs", "unfreeze", "patience"))
        check_positive(self, ("batch_size",))
        check_name("runtime", self.runtime, ("auto", *RUNTIMES))
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.head_epochs + (self.epochs if self.unfreeze else 0) == 0:
            raise InputError("nothing to train: head_epochs and epochs are both 0")


SECTIONS = {"model": ModelConfig, "augmentation": AugmentationConfig, "criterion": CriterionConfig,
            "optimizer": OptimizerConfig, "scheduler": SchedulerConfig, "training": TrainingConfig}
# CLI flags that override one field each: flag name -> (section, field)
FLAGS = {"model": ("model", "name"), "img_size": ("model", "img_size"), "epochs": ("training", "epochs"),
         "unfreeze": ("training", "unfreeze"), "box_weight": ("criterion", "box_weight"),
         "seed": ("training", "seed"), "resize": ("augmentation", "resize")}


@dataclass(frozen=True)
class LocalizeConfig:
    version: str = "v3"   # the configs/localize/<version>.yaml these defaults equal
    model: ModelConfig = field(default_factory=ModelConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    criterion: CriterionConfig = field(default_factory=CriterionConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> "LocalizeConfig":
        """Build from nested mappings (a parsed YAML); unknown sections or keys list the valid ones."""
        if not isinstance(values, dict):
            raise InputError(f"{where} must be a mapping with sections {', '.join(SECTIONS)}")
        unknown = sorted(str(k) for k in values if k not in SECTIONS and k != "version")
        if unknown:
            raise InputError(f"{where}: unknown section(s) {', '.join(unknown)}; valid: version, "
                             f"{', '.join(SECTIONS)}")
        parts = {name: _section(section, values.get(name) or {}, f"{where}: {name}")
                 for name, section in SECTIONS.items()}
        version = values.get("version", "custom")
        return cls(version=str(version), **parts)

    def with_flags(self, **flags) -> "LocalizeConfig":
        """A copy with CLI flags (names in `FLAGS`, None = not given) applied over it."""
        changes: dict[str, dict] = {}
        for name, value in flags.items():
            if value is not None:
                section, key = FLAGS[name]
                changes.setdefault(section, {})[key] = value
        unfreeze = flags.get("unfreeze")
        if flags.get("epochs") is not None and (self.training.unfreeze if unfreeze is None else unfreeze) == 0:
            # heads only: --epochs means the one stage there is
            changes["training"]["head_epochs"] = changes["training"].pop("epochs")
        return replace(self, **{s: replace(getattr(self, s), **kv) for s, kv in changes.items()})


def load_localize_config(path: str | Path | None) -> LocalizeConfig:
    """The config in the YAML at `path` (a configs/localize/vN.yaml, read safely), or the defaults."""
    if path is None:
        return LocalizeConfig()
    return LocalizeConfig.from_dict(read_yaml(path) or {}, where=f"config {path}")


def _section(cls, values, where: str):
    if not isinstance(values, dict):
        raise InputError(f"{where} must be a mapping")
    valid = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in values if k not in valid)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    return cls(**values)
