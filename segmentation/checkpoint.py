"""A trained segmenter on disk: a folder with `model.pt` (a plain state dict, loaded with
`weights_only=True`), `classes.json`, and `config.json` (training settings and input mean/std)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from classification.checkpoint import check_files, load_weights, read_config, save_weights
from classification.data import load_class_map
from classification.fileio import write_json
from classification.transforms import channel_values
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
    digest = save_weights(folder, seg.model, seg.classes)
    write_json(folder / "config.json", {"segment": seg.cfg.to_dict(),
                                        "data": {"mean": list(seg.mean), "std": list(seg.std)},
                                        "digests": {"model.pt": digest}})
    return folder


def load_segmenter(folder: str | Path) -> Segmenter:
    """Rebuild the UNet from its config and load the weights (no pickle involved)."""
    folder = Path(folder)
    check_files(folder, "segmentation checkpoint")
    meta, (cfg, mean, std) = read_config(folder, lambda m: (SegConfig.from_dict(m["segment"]),
                                                            channel_values(m["data"]["mean"], "mean", 0.0),
                                                            channel_values(m["data"]["std"], "std", 1e-6)))
    classes = load_class_map(folder / "classes.json")
    model = create_segmenter(cfg.encoder, len(classes), None, cfg.decoder_channels())
    load_weights(folder, model, meta.get("digests"))
    return Segmenter(model.eval(), classes, cfg, mean, std)
