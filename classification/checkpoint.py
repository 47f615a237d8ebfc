"""A trained classifier on disk: a folder with `model.pt` (a plain state dict, loaded with
`weights_only=True`), `classes.json`, and `config.json` (training and input settings, and
model.pt's SHA-256 under "digests"). A model.pt that fails its checksum is refused before it is
loaded; a checkpoint saved before digests existed loads unchecked."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn

from classification.config import TrainConfig
from classification.data import load_class_map, save_class_map
from classification.digest import bytes_digest
from classification.errors import InputError, first_line
from classification.fileio import write_bytes, write_json
from classification.featurenorm import feature_norm
from classification.models import classifier_module, create_classifier
from classification.train.rotation import attach_rotation_head, rotation_head
from classification.transforms import DataConfig

T = TypeVar("T")


FILES = ("model.pt", "classes.json", "config.json")


def save_checkpoint(folder: str | Path, model: nn.Module, classes: list[str], cfg: TrainConfig,
                    data_cfg: DataConfig) -> Path:
    folder = Path(folder)
    weights_digest = save_weights(folder, model, classes)
    # what the head holds, whatever the settings asked (finetune mode keeps a plain head)
    train = {**cfg.to_dict(), "feature_norm": feature_norm(classifier_module(model)) is not None,
             "aux_rotation": rotation_head(model) is not None}
    write_json(folder / "config.json", {"train": train, "data": data_cfg.__dict__,
                                        "digests": {"model.pt": weights_digest}})
    return folder


def read_config(folder: Path, parse: Callable[[dict], T]) -> tuple[dict, T]:
    """A checkpoint folder's config.json and what `parse` builds from it; a malformed file or a
    refused value is one line naming the file."""
    path = folder / "config.json"
    try:
        meta = json.loads(path.read_text())
        return meta, parse(meta)
    except InputError as e:
        raise InputError(f"checkpoint config {path}: {e}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise InputError(f"checkpoint config {path} is unreadable: {first_line(e)[:100]}") from None


def load_checkpoint(folder: str | Path) -> tuple[nn.Module, list[str], TrainConfig, DataConfig]:
    """Rebuild the model from its config and load the weights (no pickle involved)."""
    folder = Path(folder)
    check_files(folder, "checkpoint")
    # a checkpoint from before FeatureNorm existed has a plain head (and, before aux_rotation
    # existed, no rotation head: the field's default)
    meta, (cfg, data_cfg) = read_config(folder, lambda m: (TrainConfig.from_dict({"feature_norm": False, **m["train"]}),
                                                           DataConfig.from_dict(m["data"])))
    classes = load_class_map(folder / "classes.json")
    model = create_classifier(cfg.model, len(classes), weights=None, head=cfg.head, hidden=cfg.hidden,
                              norm=cfg.feature_norm)
    if cfg.aux_rotation:  # its weights are in model.pt; prediction never uses them
        attach_rotation_head(model)
    load_weights(folder, model, meta.get("digests"))
    return model.eval(), classes, cfg, data_cfg


def save_weights(folder: Path, model: nn.Module, classes: list[str]) -> str:
    """Write `model.pt` (the state dict on the CPU) and `classes.json` into `folder`; returns
    model.pt's digest, for the config to record."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    write_bytes(folder / "model.pt", buf.getvalue())
    save_class_map(folder / "classes.json", classes)
    return bytes_digest(buf.getvalue())


def check_files(folder: Path, kind: str) -> None:
    """Refuse a folder that lacks one of a checkpoint's `FILES`; `kind` names it in the error."""
    for name in FILES:
        if not (folder / name).is_file():
            raise InputError(f"not a {kind} folder: {folder} has no {name}")


def load_weights(folder: Path, model: nn.Module, digests: dict | None = None) -> None:
    """Load `folder`/model.pt into `model` (tensors only, no pickle), refused when its bytes differ
    from the digest the config recorded (`digests`: {"model.pt": sha256}; None: not checked)."""
    weights = _checked_weights(folder, digests)
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # a damaged or foreign file
        raise InputError(f"cannot load {folder / 'model.pt'}: {first_line(e)}") from None


def _checked_weights(folder: Path, digests) -> bytes:
    """model.pt's bytes, refused when they differ from the digest config.json recorded."""
    path = folder / "model.pt"
    data = path.read_bytes()
    expected = digests.get("model.pt") if isinstance(digests, dict) else None
    if expected is not None and bytes_digest(data) != expected:
        raise InputError(f"checkpoint {path} is damaged (its SHA-256 does not match config.json); "
                         "train it again or restore the folder from a copy")
    return data
