"""Running a trained UNet over whole images: class probabilities per pixel, eager or ONNX Runtime.

On CPU the network runs through ONNX Runtime (exported once with a free batch, height and width,
cached by encoder and weights, the classifier's export path); on CUDA eagerly in channels_last.
Images are reflect-padded to multiples of 32 and the padding cropped off the output; with flip
test-time augmentation the softmax of the image and of its left-right and up-down mirrors are
averaged (each mirrored back first).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch
from torch import nn

from classification.models import state_digest
from classification.runtime import cache_root_or_user, export_onnx, open_session, resolve_runtime
from segmentation.transforms import normalize, pad_to_stride, to_tensor

_logger = logging.getLogger(__name__)

Runner = Callable[[torch.Tensor], np.ndarray]  # (B, 3, H, W) normalised -> (B, C, H, W) logits
EXPORT_SIDE = 64  # the export traces one small input; every multiple of 32 then runs


def make_runner(model: nn.Module, runtime: str, device: str, cache_root: Path | None = None) -> Runner:
    """A function from a normalised batch to logits, numpy float32."""
    model = model.eval()
    if resolve_runtime(runtime, device) == "onnx":
        path = cache_root_or_user(cache_root) / "onnx" / f"unet-{_arch(model)}-{state_digest(model.state_dict())}.onnx"
        session = open_session(path, lambda p: export_onnx(model, EXPORT_SIDE, p, dynamic_size=True))
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x.numpy()})[0]
    model = model.to(device=device, memory_format=torch.channels_last)
    cuda = device.startswith("cuda")

    @torch.inference_mode()
    def run(x: torch.Tensor) -> np.ndarray:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
            return model(x).float().cpu().numpy()

    return run


def _arch(model: nn.Module) -> str:
    return model.encoder.model.pretrained_cfg.get("architecture", "encoder")


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def predict_probs(run: Runner, images: Iterable[np.ndarray], mean, std, tta: bool = False,
                  batch_size: int = 8) -> Iterator[np.ndarray]:
    """Per image (RGB uint8 HWC), its class probabilities (C, H, W) float32, in input order.

    Consecutive images of one padded shape are run as one batch."""
    batch: list[tuple[np.ndarray, tuple[int, int]]] = []
    for img in images:
        x, hw = pad_to_stride(normalize(img, mean, std))
        if batch and (x.shape != batch[0][0].shape or len(batch) == batch_size):
            yield from _run_batch(run, batch, tta)
            batch = []
        batch.append((x, hw))
    if batch:
        yield from _run_batch(run, batch, tta)


def _run_batch(run: Runner, batch: list, tta: bool) -> Iterator[np.ndarray]:
    x = to_tensor([b[0] for b in batch])
    if not tta:
        probs = softmax(run(x))
    else:
        views = torch.cat([x, x.flip(3), x.flip(2)])
        p = softmax(run(views))
        p = p.reshape(3, len(x), *p.shape[1:])
        probs = (p[0] + p[1][..., ::-1] + p[2][..., ::-1, :]) / 3
    for (_, (h, w)), p in zip(batch, probs):
        yield np.ascontiguousarray(p[:, :h, :w], dtype=np.float32)


def resize_probs(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) probabilities -> (C, H, W) at `size` = (H, W), bilinear (argmax after resizing
    keeps boundaries smoother than resizing the argmax)."""
    if probs.shape[1:] == tuple(size):
        return probs
    hwc = cv2.resize(probs.transpose(1, 2, 0), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(hwc.reshape(size[0], size[1], -1).transpose(2, 0, 1))
