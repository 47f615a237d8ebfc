"""A trained localizer on disk, without pickles of our own objects: `model.pt` (a plain state
dict, loaded with `weights_only=True`), `classes.json`, and `config.json` (the config version,
the resolved config, the input settings and model.pt's SHA-256 under "digests"). A model.pt that
fails its checksum is refused before it is loaded; one saved before digests existed loads unchecked."""
from __future__ import annotations

import json
from pathlib import Path

from classification.checkpoint import check_files, load_weights, save_weights
from classification.data import load_class_map
from classification.errors import InputError, first_line
from classification.fileio import write_json
from classification.transforms import DataConfig
from localization.config import LocalizeConfig
from localization.model import Localizer
from localization.pipeline import Trained, build_model
from localization.train import FitResult


def save_localizer(folder: str | Path, trained: Trained) -> Path:
    folder = Path(folder)
    digest = save_weights(folder, trained.model, trained.classes)
    write_json(folder / "config.json", {"version": trained.cfg.version, "config": trained.cfg.to_dict(),
                                        "data": trained.data_cfg.__dict__, "digests": {"model.pt": digest}})
    return folder


def load_localizer(folder: str | Path) -> Trained:
    """Rebuild the model from its config (no weights resolved) and load the checked state dict."""
    folder = Path(folder)
    check_files(folder, "localizer checkpoint")
    try:
        meta = json.loads((folder / "config.json").read_text())
        cfg = LocalizeConfig.from_dict(meta["config"], where=str(folder / "config.json"))
        data_cfg = DataConfig.from_dict(meta["data"])
    except InputError as e:
        raise InputError(f"checkpoint config {folder / 'config.json'}: {e}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise InputError(f"checkpoint config {folder / 'config.json'} is unreadable: {first_line(e)}") from None
    classes = load_class_map(folder / "classes.json")
    model, _ = build_model(cfg, len(classes), weights=None)
    load_weights(folder, model, meta.get("digests"))
    return Trained(model.eval(), classes, data_cfg, cfg, FitResult())


__all__ = ["Localizer", "load_localizer", "save_localizer"]
