"""A trained segmenter on disk: a folder with `model.pt` (a plain state dict, loaded with
`weights_only=True`), `classes.json`, and `config.json` (training settings and input mean/std)."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from classification.data import load_class_map, save_class_map
from classification.errors import InputError, first_line
from classification.fileio import write_bytes, write_json
from segmentation.config import SegConfig
from segmentation.models import create_segmenter


@dataclass
class Segmenter:
    """A model with what is needed to run it on new images."""
    model: nn.Module
    classes: list[str]
    cfg: SegConfig
    mean: tuple[float, ...]
    std: tuple[float, ...]


def save_segmenter(folder: str | Path, seg: Segmenter) -> Path:
    folder = Path(folder)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in seg.model.state_dict().items()}, buf)
    write_bytes(folder / "model.pt", buf.getvalue())
    save_class_map(folder / "classes.json", seg.classes)
    write_json(folder / "config.json", {"segment": seg.cfg.to_dict(),
                                        "data": {"mean": list(seg.mean), "std": list(seg.std)}})
    return folder


def load_segmenter(folder: str | Path) -> Segmenter:
    """Rebuild the UNet from its config and load the weights (no pickle involved)."""
    folder = Path(folder)
    for name in ("model.pt", "classes.json", "config.json"):
        if not (folder / name).is_file():
            raise InputError(f"not a segmentation checkpoint folder: {folder} has no {name}")
    try:
        meta = json.loads((folder / "config.json").read_text())
        cfg = SegConfig.from_dict(meta["segment"])
        mean, std = tuple(meta["data"]["mean"]), tuple(meta["data"]["std"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise InputError(f"checkpoint config {folder / 'config.json'} is unreadable: {first_line(e)}") from None
    classes = load_class_map(folder / "classes.json")
    model = create_segmenter(cfg.encoder, len(classes), None, cfg.decoder_channels())
    try:
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    except Exception as e:  # a damaged or foreign file
        raise InputError(f"cannot load {folder / 'model.pt'}: {first_line(e)}") from None
    return Segmenter(model.eval(), classes, cfg, mean, std)
