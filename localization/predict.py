"""Predicting classes and boxes for image files with the whole model: ONNX Runtime on the CPU
(exported once per set of weights and cached), or eager PyTorch; the two agree to float
tolerance. Boxes come back in each image's original pixels; with `tta` the mirrored view is
predicted too, merged, and the views' box agreement reported per image.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from classification.data import ImageSet
from classification.models import state_digest
from classification.runtime import cache_root_or_user, onnx_file_runner, resolve_runtime, torch_runner
from localization.boxes import to_original
from localization.decision import box_agreement, merge_views
from localization.features import progress_bar
from localization.heads import class_probs
from localization.pipeline import Trained
from localization.views import EVAL, FLIP, ViewDataset, ViewMaker, view_loader

_logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per image: probs (N, K), boxes (N, 4) original pixels, agreement (N,) (1.0 without TTA),
    ok (N,) decodable; seconds: wall time of the whole pass (decoding included)."""
    paths: list[str]
    classes: list[str]
    probs: np.ndarray
    boxes: np.ndarray
    agreement: np.ndarray
    ok: np.ndarray
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(int(self.ok.sum()), 1)

    def frame(self, tta: bool = False) -> pd.DataFrame:
        """`path,label,confidence,x0,y0,x1,y1` (+ `agreement` with TTA) for the decoded images."""
        ok = self.ok
        frame = pd.DataFrame({"path": [p for p, g in zip(self.paths, ok) if g],
                              "label": [self.classes[i] for i in self.probs[ok].argmax(1)],
                              "confidence": self.probs[ok].max(1).round(5)})
        for j, name in enumerate(("x0", "y0", "x1", "y1")):
            frame[name] = self.boxes[ok, j].round(2)
        if tta:
            frame["agreement"] = self.agreement[ok].round(4)
        return frame


def model_runner(trained: Trained, runtime: str, cache_root: Path | None):
    """Batch (B, 3, S, S) -> (B, K + 4) numpy, through ONNX Runtime or eagerly."""
    model = trained.model.eval()
    if resolve_runtime(runtime, "cpu") == "torch":
        return torch_runner(model, "cpu")
    root = cache_root_or_user(cache_root)
    arch = model.backbone.pretrained_cfg.get("architecture", type(model.backbone).__name__)
    size = trained.cfg.model.img_size
    path = root / "onnx" / f"localizer-{arch}-{state_digest(model.state_dict())}-{size}.onnx"
    return onnx_file_runner(model, size, path)


def predict_images(trained: Trained, images: ImageSet, runtime: str = "auto", tta: bool = False,
                   cache_root: Path | None = None, batch_size: int = 32, workers: int | None = None,
                   progress: bool = False) -> Predictions:
    """Classes and original-pixel boxes for every image in `images`."""
    views = [EVAL, FLIP] if tta else [EVAL]
    run = model_runner(trained, runtime, cache_root)
    maker = ViewMaker(trained.data_cfg, trained.cfg.augmentation.resize, "none")
    dataset = ViewDataset(images.paths, maker, [views] * len(images))
    workers = max(0, min(8, (os.cpu_count() or 1) - 1)) if workers is None else workers
    n, k, size = len(images), len(trained.classes), trained.cfg.model.img_size
    probs, boxes = np.zeros((len(views), n, k)), np.full((len(views), n, 4), np.nan)
    ok, skipped = np.ones(n, bool), []
    start = time.perf_counter()
    for idx, x, geo, bad in progress_bar(view_loader(dataset, batch_size, workers), progress, "predict"):
        for j, why in bad:
            ok[j] = False
            skipped.append((images.paths[j], why))
            _logger.warning("skipped %s: %s", images.paths[j], why)
        if x is None:
            continue
        b, v = x.shape[:2]
        out = run(x.reshape(b * v, *x.shape[2:])).reshape(b, v, -1).transpose(1, 0, 2)
        for view in range(v):
            probs[view, idx] = class_probs(out[view, :, :k], trained.cfg.criterion.class_loss)
            boxes[view, idx] = to_original(out[view, :, k:], geo[:, view], size)
    seconds = time.perf_counter() - start
    agreement = box_agreement(np.nan_to_num(boxes))
    merged_probs, merged_boxes = merge_views(probs, boxes)
    return Predictions(list(images.paths), list(trained.classes), merged_probs, merged_boxes, agreement,
                       ok, seconds, skipped)


