"""A trained localizer on disk, without pickles of our own objects: `model.pt` (a plain state
dict, loaded with `weights_only=True`), `classes.json`, and `config.json` (the config version,
the resolved config, the input settings and model.pt's SHA-256 under "digests"). A model.pt that
fails its checksum is refused before it is loaded; one saved before digests existed loads unchecked."""
from __future__ import annotations

from pathlib import Path

from classification.checkpoint import check_files, load_weights, read_config, save_weights
from classification.data import load_class_map
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
    meta, (cfg, data_cfg) = read_config(folder, lambda m: (
        LocalizeConfig.from_dict(m["config"], where=str(folder / "config.json")), DataConfig.from_dict(m["data"])))
    classes = load_class_map(folder / "classes.json")
    model, _ = build_model(cfg, len(classes), weights=None)
    load_weights(folder, model, meta.get("digests"))
    return Trained(model.eval(), classes, data_cfg, cfg, FitResult())


__all__ = ["Localizer", "load_localizer", "save_localizer"]
