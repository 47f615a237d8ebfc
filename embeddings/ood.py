"""Out-of-class scores: the distance to the k-th nearest labelled image (deep kNN OOD, Sun et al.
2022), on unit vectors.

The refusal threshold is calibrated on the labelled images themselves, each scored leave-one-out
against the others, so that `tpr` (95 %) of in-class images pass. With a few labels per class a
small k is the right one: the k-th neighbour must still be able to come from the same class.
"""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from scipy.stats import rankdata

from classification.data import ImageSet
from classification.errors import InputError, first_line
from embeddings.features import Embedder


def knn_distance(ref: np.ndarray, x: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Euclidean distance from each row of x (M, D) to its k-th nearest row of ref (N, D); with
    `exclude_self` (x is ref), each row's own match is skipped."""
    assert ref.ndim == x.ndim == 2 and ref.shape[1] == x.shape[1], (ref.shape, x.shape)
    index = faiss.IndexFlatL2(ref.shape[1])
    index.add(np.ascontiguousarray(ref, np.float32))
    kk = k + int(exclude_self)
    D, _ = index.search(np.ascontiguousarray(x, np.float32), kk)
    return np.sqrt(np.maximum(D[:, kk - 1], 0))


class KnnOOD:
    """Fit on labelled unit vectors; `score` higher = further from every labelled image.

    Attributes after fit: threshold_ (refuse above it), k_ (k actually used), calibration_
    (leave-one-out scores of the labelled images).
    """

    def __init__(self, k: int = 5, tpr: float = 0.95):
        if k < 1 or not 0 < tpr <= 1:
            raise InputError(f"OOD needs k >= 1 and tpr in (0, 1]; got k={k}, tpr={tpr}")
        self.k, self.tpr = k, tpr

    def fit(self, ref: np.ndarray) -> "KnnOOD":
        if len(ref) < 2:
            raise InputError("out-of-class scoring needs at least 2 labelled images")
        self.ref_ = np.ascontiguousarray(ref, np.float32)
        self.k_ = min(self.k, len(ref) - 1)
        self.calibration_ = knn_distance(self.ref_, self.ref_, self.k_, exclude_self=True)
        self.threshold_ = float(np.quantile(self.calibration_, self.tpr, method="higher"))
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return knn_distance(self.ref_, x, self.k_)

    def refuse(self, scores: np.ndarray) -> np.ndarray:
        return scores > self.threshold_

    def state_dict(self) -> dict:
        return {"k": self.k_, "tpr": self.tpr, "threshold": self.threshold_}


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """P(an out-of-class score > an in-class score), ties counted half (Mann-Whitney U)."""
    ranks = rankdata(np.concatenate([scores_in, scores_out]))  # average ranks for ties
    n_in, n_out = len(scores_in), len(scores_out)
    if n_in == 0 or n_out == 0:
        return float("nan")
    u = ranks[n_in:].sum() - n_out * (n_out + 1) / 2
    return float(u / (n_in * n_out))


def fpr_at_tpr(scores_in: np.ndarray, scores_out: np.ndarray, tpr: float = 0.95) -> float:
    """Share of out-of-class images that pass when the threshold keeps `tpr` of in-class ones."""
    if len(scores_in) == 0 or len(scores_out) == 0:
        return float("nan")
    threshold = np.quantile(scores_in, tpr, method="higher")
    return float((scores_out <= threshold).mean())


def score_ood(labeled: ImageSet, images: ImageSet, embedder: Embedder, k: int = 5, tpr: float = 0.95):
    """Out-of-class score of every image against the labelled ones, refused above the threshold
    that keeps `tpr` of labelled images (leave-one-out). Returns (frame, detector, skipped)."""
    detector = KnnOOD(k, tpr)  # checks k and tpr before any image is embedded
    ref, emb = embedder(labeled), embedder(images)
    detector.fit(ref.feats[ref.ok])
    scores = detector.score(emb.feats[emb.ok])
    frame = pd.DataFrame({"path": np.asarray(images.paths, dtype=object)[emb.ok], "score": scores,
                          "refused": detector.refuse(scores)})
    return frame, detector, ref.skipped + emb.skipped


def load_ood_truth(csv: str | Path) -> dict[str, bool]:
    """path,ood CSV (ood: 1/0, true/false, yes/no) -> {absolute path: is out-of-class}; paths are
    relative to the CSV's folder unless absolute."""
    csv = Path(csv)
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read OOD truth {csv}: {first_line(e)}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    frame = frame.rename(columns={"file": "path"})
    if not {"path", "ood"} <= set(frame.columns):
        raise InputError(f"{csv}: expected columns path,ood (found {','.join(frame.columns) or 'none'})")
    values = frame["ood"].str.strip().str.lower()
    bad = ~values.isin(["1", "0", "true", "false", "yes", "no"])
    if bad.any():
        raise InputError(f"{csv}: ood must be 1/0, true/false or yes/no; row {int(np.argmax(bad)) + 2} "
                         f"has {frame['ood'][bad].iloc[0]!r}")
    root = csv.parent.resolve()
    return {str((root / p).resolve()): v in ("1", "true", "yes") for p, v in zip(frame["path"], values)}


def ood_metrics(frame: pd.DataFrame, truth: dict[str, bool], tpr: float = 0.95) -> dict:
    """AUROC, FPR at `tpr`, and the refused shares, over the scored images that have a truth."""
    known = frame[frame["path"].isin(truth.keys())]
    is_ood = known["path"].map(truth).to_numpy(bool)
    s_in, s_out = known["score"].to_numpy()[~is_ood], known["score"].to_numpy()[is_ood]
    refused = known["refused"].to_numpy(bool)
    return {"n_in": int((~is_ood).sum()), "n_ood": int(is_ood.sum()), "auroc": auroc(s_in, s_out),
            "fpr_at_tpr": fpr_at_tpr(s_in, s_out, tpr),
            "refused_ood": float(refused[is_ood].mean()) if is_ood.any() else float("nan"),
            "refused_in": float(refused[~is_ood].mean()) if (~is_ood).any() else float("nan")}
