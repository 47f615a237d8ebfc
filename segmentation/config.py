"""Segmentation training settings: one frozen dataclass, validated on construction, and the YAML
reader for a config with a `train:` section (flags override it in the CLI)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from classification.config import (DEVICE, check_field_types, check_non_negative, check_positive,
                                   read_config_sections)
from classification.errors import InputError
from classification.registry import check_name
from classification.runtime import RUNTIMES

LOSS_NAMES = ("dicebce", "tversky", "cedice")  # kept here so a config is checked without torch
AUGMENTS = ("flips", "light", "strong")


@dataclass(frozen=True)
class SegConfig:
    encoder: str = "tf_efficientnet_lite0"  # any timm model (smp's `tu-` encoders)
    weights: str | None = "auto"        # state-dict file, "auto" (packaged), "hub" (download), None (random)
    size: int = 192                     # side of the square training crops (a multiple of 32); smaller
                                        # images are padded, larger ones cropped at random
    max_side: int | None = 1024         # images with a longer side are scaled down to it (masks are
                                        # predicted at that scale and resized back); None: never
    decoder_width: int = 128            # channels of the first UNet decoder block, halved per block
                                        # (floor 16); smp's default is 256, which costs 2x on CPU
    loss: str = "dicebce"               # dicebce | tversky (alpha 0.1, beta 0.9) | cedice
    head_epochs: int = 3                # stage 1: encoder frozen, decoder and head trained
    epochs: int = 30                    # stage 2: the whole network (early stopping may end it)
    train_stages: int = -1              # stage 2 trains the encoder's deepest N feature stages (of 5);
                                        # -1: all. On a CPU the high-resolution stages' backward pass is
                                        # what costs: 1 (1/32 scale) trains 3/4 of lite0's weights at ~1/10
                                        # the extra cost of all
    batch_size: int = 16
    head_lr: float = 1e-2               # stage 1: the decoder and head alone (seed 002's decoder LR)
    encoder_lr: float = 1e-4            # stage 2, the encoder. Seed 002 used 1e-3 / 1e-2; here that
    decoder_lr: float = 1e-3            # undid the decoder stage (neu_seg validation mean IoU 0.65 -> 0.62
                                        # after one epoch), so stage 2 fine-tunes at a tenth of it
    weight_decay: float = 0.0
    ema: float = 0.99                   # decay of a moving average of the weights, which validation
                                        # scores and the checkpoint keeps (0: the trained weights)
    plateau_factor: float = 0.15        # ReduceLROnPlateau on validation loss (seed 002)
    plateau_patience: int = 5           # seed 002's 2 let a small validation set's noise cut the rate early
    patience: int = 10                  # early stopping: epochs without a better validation mean IoU
    val_fraction: float = 0.15          # share of training pairs held out for validation
    augment: str = "flips"              # flips (flips + 90-degree turns + brightness) | light (h-flip only)
                                        # | strong (flips + contrast, blur, noise, cut-out holes)
    pseudo_augment: str = "strong"      # the pseudo-masks' pipeline in the loop (human masks: augment)
    pseudo_share: float = 0.5           # share of training samples drawn from pseudo-masks (0: in
                                        # proportion to their number)
    pseudo_band: int = 0                # pseudo-mask pixels this close to a class boundary are left
                                        # out of the loss (0: none; 2 cost neu_seg's loop 1.7 points)
    tta: bool = True                    # predict with the mean of the flipped views
    batches_per_epoch: int = 0          # 0: one pass over the training set; N: N batches (a fixed
                                        # budget per epoch whatever the set size, for the loop)
    threads: int = 0                    # torch CPU threads; 0: torch's default
    workers: int = 0                    # DataLoader augmentation workers (decoding is done once, up front)
    device: str = "auto"                # auto | cpu | cuda[:i]
    runtime: str = "auto"               # predict: auto (onnx on CPU) | onnx | torch
    seed: int = 0

    def __post_init__(self):
        check_field_types(self)
        check_name("loss", self.loss, LOSS_NAMES)
        check_name("augment", self.augment, AUGMENTS)
        check_name("pseudo_augment", self.pseudo_augment, AUGMENTS)
        check_name("runtime", self.runtime, ("auto", *RUNTIMES))
        if self.size < 32 or self.size % 32:
            raise InputError(f"--size must be a multiple of 32 (the UNet's stride), got {self.size}")
        if self.max_side is not None and self.max_side < 32:
            raise InputError(f"max_side must be at least 32, got {self.max_side}")
        check_positive(self, ("batch_size", "head_lr", "encoder_lr", "decoder_lr", "decoder_width"))
        check_non_negative(self, ("head_epochs", "epochs", "patience", "plateau_patience", "threads",
                                  "workers", "batches_per_epoch", "pseudo_band"))
        if self.train_stages < -1:
            raise InputError(f"train_stages must be -1 (all) or >= 0, got {self.train_stages}")
        if self.head_epochs + self.epochs == 0:
            raise InputError("nothing to train: head_epochs and epochs are both 0")
        if not 0 <= self.ema < 1:
            raise InputError(f"ema must be in [0, 1), got {self.ema}")
        if not 0 <= self.pseudo_share < 1:
            raise InputError(f"pseudo_share must be in [0, 1), got {self.pseudo_share}")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not DEVICE.fullmatch(self.device):
            raise InputError(f"unknown device {self.device!r}; valid: auto, cpu, cuda, cuda:N")
        if not 0 <= self.seed < 2**32:
            raise InputError(f"seed must be in [0, 2**32), got {self.seed}")

    def decoder_channels(self) -> tuple[int, ...]:
        return tuple(max(self.decoder_width >> i, 16) for i in range(5))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "SegConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            raise InputError(f"unknown segment setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)

    def with_(self, **changes) -> "SegConfig":
        return replace(self, **changes)


def load_seg_config(path: str | Path | None, **flags) -> SegConfig:
    """The `train:` section of a YAML config, with the flags that were given (not None) on top."""
    section = read_config_sections(path, {"train": SegConfig})["train"] if path is not None else {}
    return SegConfig.from_dict({**section, **{k: v for k, v in flags.items() if v is not None}})
