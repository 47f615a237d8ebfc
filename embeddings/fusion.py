"""One out-of-class decision from several scores.

- `knn`: the distance to the k-th nearest human label (`embeddings.ood`), for far images;
- `near`: Mahalanobis++ in the whitened space of the images scored (`embeddings.near`), for images
  of classes nobody labelled;
- `other` (only with images the user marked "none of these classes"): the cosine similarity to the
  nearest such image minus that to the nearest human label; above 0 the image is refused, as if
  "none" were one more class.

Each of `knn` and `near` becomes an in-class percentile: where a held-out human label's score would
fall (leave-one-out for knn, cross-validation for near). The fused score is the larger of the two,
so an image is refused when either is extreme, and its threshold is the one at which the whole rule
(fused score and `other`) keeps `tpr` of the held-out human labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from classification.data import ImageSet
from embeddings.features import Embedder
from embeddings.near import NearScore
from embeddings.ood import KnnOOD, knn_distance

PERCENTILE_PARTS = ("knn", "near")


def percentile(calibration: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Where x falls among the held-out human labels' scores, in (0, 1], interpolated between them;
    beyond the largest it goes on growing past 1 (by the calibration's range), so that the images
    furthest out still rank."""
    ref = np.sort(np.asarray(calibration, np.float64))
    n, x = len(ref), np.asarray(x, np.float64)
    inside = np.interp(x, ref, np.arange(1, n + 1) / n)
    span = max(ref[-1] - ref[0], 1e-12)
    return np.where(x > ref[-1], 1 + (x - ref[-1]) / span, inside).astype(np.float32)


def nearest_similarity(ref: np.ndarray, x: np.ndarray, skip_self: bool = False) -> np.ndarray:
    """Cosine similarity of each unit row of x to its nearest row of ref (its own match skipped
    when x is ref): on unit vectors, 1 - d^2 / 2 of the nearest Euclidean distance d."""
    return 1 - knn_distance(ref, x, 1, exclude_self=skip_self) ** 2 / 2


class OtherRule:
    """Images marked "none of these classes": an image more like one of them than like any human
    label is refused (score > 0)."""

    def fit(self, ref: np.ndarray, other: np.ndarray) -> "OtherRule":
        self.ref_, self.other_ = np.ascontiguousarray(ref, np.float32), np.ascontiguousarray(other, np.float32)
        self.calibration_ = nearest_similarity(self.other_, self.ref_) - nearest_similarity(self.ref_, self.ref_, True)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return nearest_similarity(self.other_, x) - nearest_similarity(self.ref_, x)


@dataclass
class OODModel:
    """A fitted out-of-class rule; `score(x)` -> {"score": fused, "refused", "knn", "near"[, "other"]}."""
    knn: KnnOOD
    near: NearScore | None
    other: OtherRule | None
    threshold: float   # on the fused score
    tpr: float

    def score(self, x: np.ndarray) -> dict[str, np.ndarray]:
        parts = {"knn": self.knn.score(x)}
        if self.near is not None:
            parts["near"] = self.near.score(x)
        if self.other is not None:
            parts["other"] = self.other.score(x)
        fused = self.fuse(parts)
        refused = (fused > self.threshold) | (parts["other"] > 0 if "other" in parts else False)
        return {"score": fused, "refused": refused, **parts}

    def fuse(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        calibration = self.calibration()
        return np.max([percentile(calibration[p], parts[p]) for p in PERCENTILE_PARTS if p in parts], axis=0)

    def calibration(self) -> dict[str, np.ndarray]:
        """Each part's scores of the held-out human labels."""
        out = {"knn": self.knn.calibration_}
        if self.near is not None:
            out["near"] = self.near.calibration_
        if self.other is not None:
            out["other"] = self.other.calibration_
        return out

    def summary(self) -> dict:
        return {"k": self.knn.k_, "tpr": self.tpr, "threshold": self.threshold,
                "parts": ["knn"] + ["near"] * (self.near is not None) + ["other"] * (self.other is not None),
                "near_dim": None if self.near is None else self.near.dim_,
                "n_other": 0 if self.other is None else len(self.other.other_)}


def fit_ood(ref: np.ndarray, labels: np.ndarray, sample: np.ndarray, other: np.ndarray | None = None, *,
            k: int = 5, tpr: float = 0.95, near: bool = True, dim: int = 32) -> OODModel:
    """Fit the rule on the human labels' unit vectors and classes, a sample of the images to score
    (with the labels, what the near score's whitening is fitted on) and the "none of these" images,
    if any."""
    knn = KnnOOD(k, tpr).fit(ref)
    near = near and len(ref) >= 3  # fewer: no spread to measure
    near_score = NearScore(dim).fit(ref, labels, np.vstack([ref, sample])) if near else None
    rule = OtherRule().fit(ref, other) if other is not None and len(other) else None
    model = OODModel(knn, near_score, rule, threshold=float("inf"), tpr=tpr)
    calibration = model.calibration()
    fused = model.fuse(calibration)
    refused_by_other = calibration["other"] > 0 if rule is not None else np.zeros(len(ref), bool)
    model.threshold = keep_threshold(fused, refused_by_other, tpr)
    return model


def keep_threshold(fused: np.ndarray, refused: np.ndarray, tpr: float) -> float:
    """The smallest fused threshold at which `tpr` of the held-out human labels pass the whole rule
    (those `refused` by another part count against it); the largest fused score when none does."""
    for t in np.unique(fused):
        if ((fused <= t) & ~refused).mean() >= tpr:
            return float(t)
    return float(fused.max())


def score_ood(labeled: ImageSet, images: ImageSet, embedder: Embedder, other: ImageSet | None = None, *,
              k: int = 5, tpr: float = 0.95, near: bool = True):
    """Out-of-class scores of every image against the labelled ones (and the "none of these"
    images, if given); the rule keeps `tpr` of held-out labelled images. Returns (frame with path,
    score, refused and each part's score; the fitted OODModel; files skipped)."""
    KnnOOD(k, tpr)  # checks k and tpr before any image is embedded
    ref, emb = embedder(labeled), embedder(images)
    marked = embedder(other) if other is not None else None
    model = fit_ood(ref.feats[ref.ok], labeled.labels[ref.ok], emb.feats[emb.ok],
                    None if marked is None else marked.feats[marked.ok], k=k, tpr=tpr, near=near)
    scored = model.score(emb.feats[emb.ok])
    frame = pd.DataFrame({"path": np.asarray(images.paths, dtype=object)[emb.ok], **scored})
    order = ["path", "score", "refused"] + [c for c in ("knn", "near", "other") if c in frame]
    skipped = ref.skipped + emb.skipped + (marked.skipped if marked is not None else [])
    return frame[order], model, skipped
