"""A trained localizer on disk, without pickles of our own objects: `model.pt` (a plain state
dict, loaded with `weights_only=True`), `classes.json`, and `config.json` (the config version,
the resolved config and the input settings)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from classification.data import load_class_map, save_class_map
from classification.errors import InputError, first_line
from classification.fileio import write_bytes, write_json
from classification.transforms import DataConfig
from localization.config import LocalizeConfig
from localization.model import Localizer
from localization.pipeline import Trained, build_model
from localization.train import FitResult

FILES = ("model.pt", "classes.json", "config.json")


def save_localizer(folder: str | Path, trained: Trained) -> Path:
    folder = Path(folder)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in trained.model.state_dict().items()}, buf)
    write_bytes(folder / "model.pt", buf.getvalue())
    save_class_map(folder / "classes.json", trained.classes)
    write_json(folder / "config.json", {"version": trained.cfg.version, "config": trained.cfg.to_dict(),
                                        "data": trained.data_cfg.__dict__})
    return folder


def load_localizer(folder: str | Path) -> Trained:
    """Rebuild the model from its config (no weights resolved) and load the state dict."""
    folder = Path(folder)
    for name in FILES:
        if not (folder / name).is_file():
            raise InputError(f"not a localizer checkpoint: {folder} has no {name}")
    try:
        meta = json.loads((folder / "config.json").read_text())
        cfg = LocalizeConfig.from_dict(meta["config"], where=str(folder / "config.json"))
        data_cfg = DataConfig(**{**meta["data"], "mean": tuple(meta["data"]["mean"]),
                                 "std": tuple(meta["data"]["std"])})
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise InputError(f"checkpoint config {folder / 'config.json'} is unreadable: {first_line(e)}") from None
    classes = load_class_map(folder / "classes.json")
    model, _ = build_model(cfg, len(classes), weights=None)
    try:
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    except Exception as e:  # a damaged or foreign file
        raise InputError(f"cannot load {folder / 'model.pt'}: {first_line(e)}") from None
    return Trained(model.eval(), classes, data_cfg, cfg, FitResult())


__all__ = ["Localizer", "load_localizer", "save_localizer"]
