"""Albumentations pipelines built from the model's own data config (timm `resolve_data_config`).

Three kinds: `eval` (resize + centre crop), `weak` (FixMatch's flip and small shift) and
`strong` (weak + RandAugment-style ops with random magnitudes + Cutout). Mean, std, size and
interpolation always come from the model, so nothing here is tied to one backbone.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import albumentations as A
import cv2

from classification.errors import InputError, brief

KINDS = ("eval", "weak", "strong")
_INTERP = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


@dataclass(frozen=True)
class DataConfig:
    """What a model expects as input."""
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0

    @classmethod
    def from_dict(cls, data: dict) -> "DataConfig":
        """From a saved config's `data` section, checked: a hand-edited or damaged file must not
        give a zero std (NaN probabilities), a size of text, or a crop wider than the image."""
        if not isinstance(data, dict):
            raise InputError(f"data must be a mapping, got {brief(data)}")
        size, crop, interp = data.get("size"), data.get("crop_pct", 1.0), data.get("interpolation", "bicubic")
        if type(size) is not int or not 16 <= size <= 4096:
            raise InputError(f"data.size must be an integer in [16, 4096], got {brief(size)}")
        if not _number(crop) or not 0 < crop <= 1:
            raise InputError(f"data.crop_pct must be a number in (0, 1], got {brief(crop)}")
        if interp not in _INTERP:
            raise InputError(f"data.interpolation must be one of {', '.join(_INTERP)}, got {brief(interp)}")
        mean, std = channel_values(data.get("mean"), "mean", 0.0), channel_values(data.get("std"), "std", 1e-6)
        return cls(size=size, mean=mean, std=std, interpolation=interp, crop_pct=float(crop))


def _number(x) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


def channel_values(values, name: str, low: float) -> tuple[float, float, float]:
    """Three finite numbers, each at least `low` (mean: 0; std: above 0)."""
    if not isinstance(values, list) or len(values) != 3 or not all(_number(v) and v >= low for v in values):
        bound = "> 0" if low > 0 else ">= 0"
        raise InputError(f"data.{name} must be 3 finite numbers {bound} (one per channel), got {brief(values)}")
    return tuple(float(v) for v in values)


def data_config(model, size: int | None = None, crop_pct: float | None = None) -> DataConfig:
    """Resolve input size, mean/std and interpolation from a timm model's pretrained config.

    `crop_pct` defaults to 1.0 (no border cropped away): pseudo-labelling looks at whole images,
    and on small images the model's ImageNet crop would cut off part of the object.
    """
    from timm.data import resolve_data_config

    cfg = resolve_data_config(model=model)
    return DataConfig(size=int(size or cfg["input_size"][-1]), mean=tuple(cfg["mean"]),
                      std=tuple(cfg["std"]), interpolation=cfg.get("interpolation", "bicubic"),
                      crop_pct=float(crop_pct if crop_pct is not None else 1.0))


MIN_AUTO_SIZE = 160  # the smallest input at which Lite0 kept its accuracy on 32-px images
SIZE_STEP = 32       # EfficientNet's total stride


def auto_size(model_size: int, native_side: int | None) -> int:
    """The input size for images whose median shorter side is `native_side` pixels.

    Upscaling a small image far beyond its own detail buys nothing but compute, and shrinking a
    large one below the model's size loses what the weights saw: the median shorter side rounded
    up to a multiple of 32, never below `MIN_AUTO_SIZE`, never above the model's own size.
    """
    if not native_side:
        return model_size
    side = -(-int(native_side) // SIZE_STEP) * SIZE_STEP
    return min(model_size, max(MIN_AUTO_SIZE, side))


def native_side(paths: list[str], sample: int = 64) -> int | None:
    """The median shorter side of up to `sample` of `paths` (evenly spread; headers only)."""
    from PIL import Image

    step = max(1, len(paths) // sample)
    sides = []
    for path in paths[::step][:sample]:
        try:
            with Image.open(path) as im:
                sides.append(min(im.size))
        except Exception:  # an unreadable file is skipped (and reported) where it is decoded
            continue
    return int(sorted(sides)[len(sides) // 2]) if sides else None


def model_input_size(model_name: str) -> int:
    """The input size of a timm model's pretrained config (224 where it names none)."""
    import timm

    cfg = timm.get_pretrained_cfg(model_name)
    return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224


def choose_size(model_name: str, paths: list[str]) -> int:
    """`auto_size` for `model_name` on the images at `paths`."""
    return auto_size(model_input_size(model_name), native_side(paths))


def create_transform(kind: str, cfg: DataConfig, n_ops: int = 2) -> A.Compose:
    """Build the `eval`, `weak` or `strong` pipeline. Output: float32 HWC, normalised."""
    if kind not in KINDS:
        raise ValueError(f"unknown transform kind {kind!r}; valid: {', '.join(KINDS)}")
    interp = _INTERP.get(cfg.interpolation, cv2.INTER_CUBIC)
    resize = [A.SmallestMaxSize(max_size=int(round(cfg.size / cfg.crop_pct)), interpolation=interp),
              A.CenterCrop(cfg.size, cfg.size)]
    ops = list(resize)
    if kind in ("weak", "strong"):
        ops += [A.HorizontalFlip(p=0.5),
                A.Affine(translate_percent=(-0.125, 0.125), border_mode=cv2.BORDER_REFLECT_101, p=1.0)]
    if kind == "strong":
        ops += [A.SomeOf(_randaugment_ops(), n=n_ops, replace=True, p=1.0),
                A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.1, 0.5),
                                hole_width_range=(0.1, 0.5), fill=127, p=1.0)]
    ops.append(A.Normalize(mean=cfg.mean, std=cfg.std, max_pixel_value=255.0))
    return A.Compose(ops)


def transform_id(transform: A.Compose) -> str:
    """A short stable id of a pipeline's full definition: part of every feature-cache key."""
    spec = json.dumps(A.to_dict(transform), sort_keys=True, default=str)
    return hashlib.blake2b((A.__version__ + spec).encode(), digest_size=8).hexdigest()


def _randaugment_ops() -> list:
    """RandAugment's 14 ops (FixMatch list), each with a magnitude drawn uniformly per call."""
    border = cv2.BORDER_CONSTANT
    return [
        A.NoOp(),
        A.AutoContrast(p=1.0),
        A.Equalize(p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0.45, contrast_limit=0, p=1.0),
        A.RandomBrightnessContrast(brightness_limit=0, contrast_limit=0.45, p=1.0),
        A.ColorJitter(brightness=0, contrast=0, saturation=(0.05, 1.95), hue=0, p=1.0),
        A.Sharpen(alpha=(0.05, 0.95), lightness=(1.0, 1.0), p=1.0),
        A.Posterize(num_bits=(4, 8), p=1.0),
        A.Solarize(threshold_range=(0.0, 1.0), p=1.0),
        A.Affine(rotate=(-30, 30), border_mode=border, fill=127, p=1.0),
        A.Affine(shear={"x": (-17, 17), "y": (0, 0)}, border_mode=border, fill=127, p=1.0),
        A.Affine(shear={"x": (0, 0), "y": (-17, 17)}, border_mode=border, fill=127, p=1.0),
        A.Affine(translate_percent={"x": (-0.3, 0.3), "y": (0, 0)}, border_mode=border, fill=127, p=1.0),
        A.Affine(translate_percent={"x": (0, 0), "y": (-0.3, 0.3)}, border_mode=border, fill=127, p=1.0),
    ]
