"""Embeddings of images: the backbone's pooled features (eval view), square-rooted and L2-normalised.

They come from `classification.features`, so they share the feature cache with training: an
image embedded for the index costs nothing when the loop later needs it, and vice versa.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from classification.cache import FeatureCache
from classification.config import DEFAULT_MODEL, TrainConfig
from classification.context import FitContext
from classification.data import ImageSet
from classification.features import extract_features
from classification.models import backbone_id, create_classifier
from classification.transforms import create_transform, data_config, transform_id


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as C-contiguous float32 for faiss."""
    x = np.ascontiguousarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), np.float32)


def spherical(feats: np.ndarray) -> np.ndarray:
    """The pooled features as distances should see them: square-rooted (a few large activations
    no longer dominate) and L2-normalised, as the classifier's `FeatureNorm` does before centring."""
    return l2_normalize(np.sqrt(np.maximum(feats, 0.0)))


@dataclass
class Embedded:
    """feats: (N, D) unit rows; ok: (N,) decodable; skipped: (path, reason) of the others."""
    feats: np.ndarray
    ok: np.ndarray
    skipped: list[tuple[str, str]]


class Embedder:
    """A frozen backbone that turns images into unit vectors.

    `provenance()` names everything the vectors depend on; an index stores it in its manifest and
    refuses queries embedded differently.
    """

    def __init__(self, model: str = DEFAULT_MODEL, weights: str | None = "auto",
                 img_size: int | None = None, cache: FeatureCache | None = None, runtime: str = "auto",
                 batch_size: int = 64, workers: int | None = None, progress: bool = False):
        self.model_name = model
        self.model = create_classifier(model, 2, weights=weights)
        self.data_cfg = data_config(self.model, img_size)
        self.cache = cache or FeatureCache(None)
        settings = TrainConfig(runtime=runtime, batch_size=batch_size, workers=workers)  # what a pass reads
        self.ctx = FitContext(self.model, settings, self.data_cfg, self.cache, "cpu", progress)

    def provenance(self) -> dict:
        return {"model": self.model_name, "weights_id": backbone_id(self.model),
                "transform": transform_id(create_transform("eval", self.data_cfg)),
                "img_size": self.data_cfg.size, "embedding": "sqrt-l2"}

    def __call__(self, images: ImageSet) -> Embedded:
        if len(images) == 0:
            return Embedded(np.zeros((0, 0), np.float32), np.zeros(0, bool), [])
        f = extract_features(self.ctx, images, kind="eval")
        feats = f.feats[0] if f.feats.shape[-1] else np.zeros((len(images), 0), np.float32)
        return Embedded(spherical(feats), f.ok, f.skipped)
