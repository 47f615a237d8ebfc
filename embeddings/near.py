"""The near out-of-class score: Mahalanobis++ (Müller & Hein 2025) in a whitened, low-dimensional
space of the images being scored.

Images of a class nobody labelled (a dog when only cats were) lie about as close to the human labels
as in-class images do in the raw space: what sets them apart is a few directions that the raw
distance drowns. The space here is the scored images' top `dim` principal directions, each scaled
to unit variance, then L2-normalised. In it the score is the Mahalanobis distance to the nearest
class mean, with one mean per class from the human labels and one covariance of the labels around
their means, shared and shrunk (Ledoit-Wolf): with 25 labels per class there is far too little
data for one covariance per class.

Whitening alone is not a guard: far images (digits among photos) differ from the labels mostly
along the mean direction it removes, so this score goes with the kNN distance (`embeddings.fusion`).
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import eigh
from sklearn.covariance import LedoitWolf

from classification.errors import InputError
from embeddings.features import l2_normalize


class NearScore:
    """Fit on the human labels' unit vectors, their classes and a sample of the images to score;
    `score` higher = further from every class.

    Attributes after fit: calibration_ (each human label's score with its fold left out of the means
    and covariance, in the order given), dim_ (the dimension actually used).
    """

    def __init__(self, dim: int = 32, folds: int = 10):
        if dim < 1 or folds < 2:
            raise InputError(f"the near score needs dim >= 1 and folds >= 2; got dim={dim}, folds={folds}")
        self.dim, self.folds = dim, folds

    def fit(self, ref: np.ndarray, labels: np.ndarray, sample: np.ndarray) -> "NearScore":
        if len(ref) < 3 or len(np.unique(labels)) < 1:
            raise InputError("the near out-of-class score needs at least 3 labelled images")
        self.center_, self.project_ = whitening(sample, self.dim)
        self.dim_ = self.project_.shape[1]
        z = self.transform(ref)
        self.means_, self.precision_ = class_model(z, labels)
        self.calibration_ = self._cross_validated(z, labels)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return l2_normalize((np.asarray(x, np.float32) - self.center_) @ self.project_)

    def score(self, x: np.ndarray) -> np.ndarray:
        return nearest_distance(self.transform(x), self.means_, self.precision_)

    def _cross_validated(self, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each label scored by means and covariance fitted without its fold; folds are dealt per
        class, so every class keeps a label in training where it has two or more."""
        fold = np.zeros(len(z), np.int64)
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            fold[members] = np.arange(len(members)) % self.folds
        out = np.zeros(len(z), np.float32)
        for f in np.unique(fold):
            held = fold == f
            means, precision = class_model(z[~held], labels[~held])
            out[held] = nearest_distance(z[held], means, precision)
        return out


def whitening(sample: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre (D,), projection (D, d)): the sample's top d principal directions scaled to unit
    variance; d = min(dim, rank - 1) so that no direction is noise blown up."""
    x = np.asarray(sample, np.float32)
    if len(x) < 3:
        raise InputError("the near out-of-class score needs at least 3 images to score")
    center = x.mean(0)
    centred = x - center
    gram = (centred.T @ centred).astype(np.float64) / (len(x) - 1)
    top = min(dim + 1, len(gram))  # only the leading eigenpairs: a full decomposition costs seconds
    variance, vectors = eigh(gram, subset_by_index=[len(gram) - top, len(gram) - 1])
    variance, vectors = variance[::-1], vectors[:, ::-1]  # largest first
    d = max(1, min(dim, int((variance > variance[0] * 1e-10).sum()) - 1))
    project = vectors[:, :d] / np.sqrt(np.maximum(variance[:d], 1e-12))  # identical images: no spread
    return center, project.astype(np.float32)


def class_model(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class means (C', d) of the classes present, shared shrunk precision matrix (d, d))."""
    classes = np.unique(labels)
    means = np.stack([z[labels == c].mean(0) for c in classes])
    residual = z - means[np.searchsorted(classes, labels)]
    if len(residual) < 2:  # one label: no spread to measure, plain Euclidean distance
        return means, np.eye(z.shape[1], dtype=np.float32)
    covariance = LedoitWolf().fit(residual).covariance_
    return means, np.linalg.pinv(covariance).astype(np.float32)


def nearest_distance(z: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each row of z to its nearest class mean."""
    best = np.full(len(z), np.inf, np.float32)
    for m in means:
        d = z - m
        best = np.minimum(best, np.einsum("ij,jk,ik->i", d, precision, d))
    return best
