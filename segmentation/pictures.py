"""Pictures: coloured overlays, seed 002's image | truth | prediction panels, training curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from classification.fileio import write_figure
from segmentation.data import IGNORE

# background transparent, then distinct colours; IGNORE shown grey
_PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                     (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60)],
                    np.uint8)


def colours(n: int) -> np.ndarray:
    """(n, 3) uint8 colours; beyond the palette, a fixed pseudo-random set."""
    extra = np.random.default_rng(0).integers(0, 256, (max(0, n - len(_PALETTE)), 3), dtype=np.uint8)
    return np.concatenate([_PALETTE, extra])[:n]


def overlay(img: np.ndarray, mask: np.ndarray, n_classes: int, alpha: float = 0.45) -> np.ndarray:
    """The image with each defect class tinted in its colour (background left as is)."""
    out = img.astype(np.float32).copy()
    pal = colours(n_classes).astype(np.float32)
    for c in range(1, n_classes):
        sel = mask == c
        out[sel] = (1 - alpha) * out[sel] + alpha * pal[c]
    out[mask == IGNORE] = 0.5 * out[mask == IGNORE] + 0.5 * 128
    return np.clip(out, 0, 255).astype(np.uint8)


def panels_png(rows: list[dict], classes: list[str], path: str | Path, title: str) -> Path:
    """One row per image: image | truth | prediction. Each row dict: name, image, truth, pred, iou."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows):
        views = [(row["image"], row["name"]),
                 (overlay(row["image"], row["truth"], len(classes)), "truth"),
                 (overlay(row["image"], row["pred"], len(classes)), f"prediction (IoU {row['iou']:.2f})")]
        for ax, (pic, label) in zip(ax_row, views):
            ax.imshow(pic)
            ax.set_title(label, fontsize=9)
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(len(classes))[c] / 255) for c in range(1, len(classes))]
    fig.legend(handles, classes[1:], loc="lower center", ncol=min(len(classes) - 1, 6), fontsize=8)
    fig.suptitle(title)
    return write_figure(path, fig)


def curves_png(history: list[dict], path: str | Path) -> Path:
    """Training loss, validation loss and validation mean IoU per epoch, stages marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train loss", marker=".")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="validation loss", marker=".")
    ax_iou.plot(epochs, [h["val_miou"] for h in history], label="validation mean IoU (defects)", marker=".")
    for ax in (ax_loss, ax_iou):
        starts = [h["epoch"] for i, h in enumerate(history) if i and h["stage"] != history[i - 1]["stage"]]
        for s in starts:
            ax.axvline(s - 0.5, color="grey", linestyle=":")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    return write_figure(path, fig)
