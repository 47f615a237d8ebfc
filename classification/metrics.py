"""Classification metrics and the confusion-matrix picture."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from classification.fileio import write_figure


def no_validation() -> dict[str, float]:
    """The evaluation record when there is nothing to validate on (the epoch loop then keeps the last epoch)."""
    return {"loss": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan")}


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 over all `n_classes` (absent classes count as F1 = 0 only if predicted)."""
    if len(y_true) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    labels = np.arange(n_classes)
    present = np.union1d(np.unique(y_true), np.unique(y_pred))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels[np.isin(labels, present)],
                                       average="macro", zero_division=0))}


def report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Per-class precision, recall, F1 and support, plus accuracy and macro averages."""
    return classification_report(y_true, y_pred, labels=np.arange(len(classes)), target_names=classes,
                                 output_dict=True, zero_division=0)


def confusion_png(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], path: str | Path,
                  title: str = "Confusion matrix") -> Path:
    """Write a row-normalised confusion matrix with counts in each cell."""
    return confusion_matrix_png(confusion_matrix(y_true, y_pred, labels=np.arange(len(classes))), classes, path,
                                title)


def confusion_matrix_png(cm: np.ndarray, classes: list[str], path: str | Path,
                         title: str = "Confusion matrix") -> Path:
    """`confusion_png` from counts already tallied: cm[true, predicted], (len(classes),) * 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    assert cm.shape == (len(classes), len(classes)), (cm.shape, len(classes))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = 2.5 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (accuracy {np.trace(cm) / max(cm.sum(), 1):.1%})")
    if len(classes) <= 30:
        for i, j in np.ndindex(cm.shape):
            ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return write_figure(path, fig)
