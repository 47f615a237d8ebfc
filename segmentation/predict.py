"""`predict_folder()`: a checkpoint over a folder of images -> a mask PNG (class indices, the
image's own size) and an overlay PNG per image, and predictions.csv with each image's confidence.

Output names follow the input's path below the folder (`a/b.jpg` -> `masks/a/b.png`), so images
in different subfolders never overwrite each other. Unreadable files are skipped and reported.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from PIL import Image

from classification.config import resolve_device
from classification.errors import InputError
from classification.fileio import write_bytes, write_csv
from classification.images import BadImage, decode
from classification.sources import find_images
from segmentation.checkpoint import load_segmenter
from segmentation.confidence import mask_confidence
from segmentation.inference import make_runner, predict_probs, resize_probs
from segmentation.pictures import overlay
from segmentation.transforms import scale_to

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictSpec:
    checkpoint: Path
    images: Path
    out: Path
    tta: bool | None = None       # flip test-time augmentation; None: the checkpoint's setting
    runtime: str = "auto"         # auto (onnx on CPU) | onnx | torch
    device: str = "auto"
    cache_dir: Path | None = None  # where the ONNX export is cached
    batch_size: int = 8


def write_png(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def predict_folder(spec: PredictSpec, progress: bool = False) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Predict every image under `spec.images`; returns (predictions frame, skipped files)."""
    seg = load_segmenter(spec.checkpoint)
    root = Path(spec.images)
    if not root.is_dir():
        raise InputError(f"images folder not found: {root}")
    files = find_images(root)
    if not files:
        raise InputError(f"no images found in {root}")
    run = make_runner(seg.model, spec.runtime, resolve_device(spec.device), spec.cache_dir)
    tta = seg.cfg.tta if spec.tta is None else spec.tta
    decoded, skipped, sizes, images = [], [], {}, {}

    def stream() -> Iterator[np.ndarray]:
        for f in files:
            try:
                img = decode(f)
            except BadImage as e:
                skipped.append((str(f), str(e)))
                continue
            decoded.append(f)
            sizes[f], images[f] = img.shape[:2], img
            yield scale_to(img, seg.cfg.max_side)

    rows = []
    probs_iter = predict_probs(run, stream(), seg.mean, seg.std, tta, spec.batch_size)
    for i, probs in enumerate(_bar(probs_iter, len(files), progress)):
        f = decoded[i]
        rows.append(_write_one(spec.out, root, f, images.pop(f), resize_probs(probs, sizes[f]), len(seg.classes)))
    for path, reason in skipped:
        _logger.warning("skipped %s: %s", path, reason)
    frame = pd.DataFrame(rows, columns=["path", "mask", "overlay", "confidence", "defect_fraction"])
    write_csv(Path(spec.out) / "predictions.csv", frame)
    return frame, skipped


def _write_one(out: Path, root: Path, path: Path, img: np.ndarray, probs: np.ndarray, n_classes: int) -> dict:
    pred, _, conf = mask_confidence(probs)
    rel = path.relative_to(root).with_suffix(".png")
    mask_path, overlay_path = Path(out) / "masks" / rel, Path(out) / "overlays" / rel
    write_png(mask_path, pred)
    write_png(overlay_path, overlay(img, pred, n_classes))
    return {"path": str(path), "mask": str(mask_path), "overlay": str(overlay_path),
            "confidence": round(conf, 6), "defect_fraction": round(float((pred > 0).mean()), 6)}


def _bar(it, total: int, progress: bool):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc="predict", unit="img")
