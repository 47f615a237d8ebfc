"""Running the trainable part (tail + heads) on cached trunk maps, and scoring its outputs."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from localization.boxes import box_iou, to_original
from localization.model import Localizer


@torch.inference_mode()
def run_heads(model: Localizer, tail: nn.Module, maps: np.ndarray, shape: tuple, batch_size: int = 64
              ) -> tuple[np.ndarray, np.ndarray]:
    """Flattened trunk maps (N, D) -> (logits (N, K), normalised boxes (N, 4)), in eval mode."""
    was = model.training
    model.eval()
    logits, boxes = [], []
    for i in range(0, len(maps), batch_size):
        x = torch.from_numpy(maps[i:i + batch_size].astype(np.float32)).reshape(-1, *shape)
        lo, bx = model.heads(tail(x))
        logits.append(lo.numpy())
        boxes.append(bx.numpy())
    model.train(was)
    k = model.num_classes
    return (np.concatenate(logits) if logits else np.zeros((0, k), np.float32),
            np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32))


@torch.inference_mode()
def through(part: nn.Module, maps: np.ndarray, shape: tuple, batch_size: int = 64) -> tuple[np.ndarray, tuple]:
    """Flattened maps (..., D) through a frozen `part` -> (its flattened float16 outputs, their shape)."""
    flat = maps.reshape(-1, maps.shape[-1])
    outs, out_shape = [], shape
    for i in range(0, len(flat), batch_size):
        y = part(torch.from_numpy(flat[i:i + batch_size].astype(np.float32)).reshape(-1, *shape))
        out_shape = tuple(y.shape[1:])
        outs.append(y.reshape(len(y), -1).numpy().astype(np.float16))
    out = np.concatenate(outs) if outs else np.zeros((0, int(np.prod(shape))), np.float16)
    return out.reshape(*maps.shape[:-1], -1), out_shape


def class_probs(logits: np.ndarray, class_loss: str) -> np.ndarray:
    """Per-class confidence: softmax, or independent sigmoids for a BCE-trained head."""
    logits = np.asarray(logits, np.float64)
    if class_loss == "bce":
        return 1.0 / (1.0 + np.exp(-logits))
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def score(probs: np.ndarray, boxes_px: np.ndarray, labels: np.ndarray, truth_px: np.ndarray) -> dict:
    """Class accuracy, and on the images with a true box: mean IoU and the share with IoU >= 0.5."""
    has = ~np.isnan(truth_px[:, 0])
    iou = box_iou(boxes_px[has], truth_px[has]) if has.any() else np.zeros(0)
    return {"accuracy": float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan"),
            "mean_iou": float(iou.mean()) if len(iou) else float("nan"),
            "iou50": float((iou >= 0.5).mean()) if len(iou) else float("nan"),
            "n": int(len(labels)), "n_boxes": int(has.sum())}


def to_pixels(boxes: np.ndarray, geos: np.ndarray, size: int) -> np.ndarray:
    """Normalised model boxes of views with geometry rows `geos` -> original pixels."""
    return to_original(boxes, geos, size) if len(boxes) else np.zeros((0, 4))
