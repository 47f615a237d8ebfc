"""Pseudo-label audit against a truth file. The truth is read here and only here: it never reaches
training or selection, it only scores what the loop already decided."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from classification.data import ImageSet
from classification.errors import InputError, first_line


def load_truth(csv: str | Path, pool: ImageSet, classes: list[str]) -> np.ndarray:
    """True class index per pool image (-1 where the truth file has no row for it).

    Rows match a pool image by path relative to the truth file's folder or any parent of it, or
    by file name when that is unique.
    """
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InputError(f"cannot read truth CSV {csv}: {first_line(e)}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    frame = frame.rename(columns={"path": "file", "filepath": "file", "class": "label"})
    twice = sorted(set(frame.columns[frame.columns.duplicated()]))
    if twice:  # pandas would hand back a frame for frame.file, and its column names as rows
        raise InputError(f"truth CSV {csv}: more than one column means {', '.join(twice)} "
                         "(file, path and filepath are synonyms, as are label and class); keep one")
    if not {"file", "label"} <= set(frame.columns):
        raise InputError(f"truth CSV {csv} needs the columns file,label")
    index = {c: i for i, c in enumerate(classes)}
    by_key = {str(f).strip(): index.get(str(lab).strip(), -1) for f, lab in zip(frame.file, frame.label)}
    truth = np.full(len(pool), -1, np.int64)
    for i, path in enumerate(pool.paths):
        for key in _candidate_keys(Path(path)):
            if key in by_key:
                truth[i] = by_key[key]
                break
    return truth


def _candidate_keys(path: Path):
    parts = path.parts
    for start in range(len(parts) - 1, 0, -1):  # "u1.jpg", "unlabeled/u1.jpg", ...
        yield "/".join(parts[start:])


def audit(pseudo_labels: np.ndarray, truth: np.ndarray, classes: list[str]) -> dict:
    """Precision and coverage of the accepted pseudo-labels, overall and per class.

    precision: share of accepted labels that are right (per class: of those given class c);
    coverage: share of the pool with an accepted label (per class: of the images truly in c).
    Images without truth are left out of both.
    """
    known = truth >= 0
    acc = (pseudo_labels >= 0) & known
    right = acc & (pseudo_labels == truth)
    out = {"precision": float(right.sum() / acc.sum()) if acc.any() else float("nan"),
           "coverage": float(acc.sum() / known.sum()) if known.any() else float("nan"),
           "correct": int(right.sum()), "scored": int(known.sum()), "per_class": {}}
    for c, name in enumerate(classes):
        given, true_c = acc & (pseudo_labels == c), known & (truth == c)
        out["per_class"][name] = {
            "precision": float((given & right).sum() / given.sum()) if given.any() else float("nan"),
            "coverage": float((acc & true_c).sum() / true_c.sum()) if true_c.any() else float("nan")}
    return out
