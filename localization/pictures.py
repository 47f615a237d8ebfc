"""Pictures of a localisation run: training curves, and the top-k best and worst predictions by
IoU with the true box (green) and the predicted one (red) drawn on the image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from classification.fileio import atomic_path, write_figure
from classification.images import decode
from localization.boxes import box_iou

TILE = 224  # gallery tile side, pixels
TRUTH, PREDICTED = (40, 200, 40), (230, 40, 40)


def curves_png(history: list[dict], path: str | Path) -> Path:
    """Losses, validation mean IoU and accuracy per epoch; a dotted line where stage 2 begins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("train_loss", "train loss"), ("val_loss", "validation loss")):
        if any(key in r for r in history):
            ax_loss.plot(epochs, [r.get(key, np.nan) for r in history], label=label)
    for key, label in (("val_mean_iou", "validation mean IoU"), ("val_accuracy", "validation accuracy"),
                       ("val_iou50", "validation IoU >= 0.5")):
        if any(key in r for r in history):
            ax_score.plot(epochs, [r.get(key, np.nan) for r in history], label=label)
    stage2 = [r["epoch"] for r in history if r.get("stage") == "unfreeze"]
    for ax in (ax_loss, ax_score):
        if stage2:
            ax.axvline(stage2[0] - 0.5, color="grey", linestyle=":", label="blocks unfrozen")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    ax_loss.set_yscale("log")
    ax_score.set_ylim(0, 1)
    ax_loss.set_title("loss")
    ax_score.set_title("validation")
    return write_figure(path, fig)


def best_worst_png(paths: list[str], truth: np.ndarray, predicted: np.ndarray, captions: list[str],
                   path: str | Path, k: int = 3) -> Path:
    """Two rows: the k images with the highest IoU between `truth` and `predicted` boxes
    (original pixels), then the k with the lowest; each tile captioned with its IoU and caption."""
    assert len(paths) == len(truth) == len(predicted) == len(captions)
    iou = box_iou(predicted, truth)
    order = np.argsort(-iou, kind="stable")
    rows = [("best", order[:k]), ("worst", order[::-1][:k])]
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (k * TILE, 2 * (TILE + 14)), "white")
    for r, (title, picks) in enumerate(rows):
        for c, i in enumerate(picks):
            tile = _tile(paths[i], truth[i], predicted[i])
            top = r * (TILE + 14)
            canvas.paste(tile, (c * TILE, top + 14))
            ImageDraw.Draw(canvas).text((c * TILE + 4, top + 1), f"{title}: IoU {iou[i]:.2f} {captions[i]}",
                                        fill="black", font=font)
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def _tile(path: str, truth: np.ndarray, predicted: np.ndarray) -> Image.Image:
    img = Image.fromarray(decode(path))
    scale = TILE / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    draw = ImageDraw.Draw(img)
    for box, colour in ((truth, TRUTH), (predicted, PREDICTED)):
        draw.rectangle([float(v) * scale for v in box], outline=colour, width=2)
    tile = Image.new("RGB", (TILE, TILE), "white")
    tile.paste(img, (0, 0))
    return tile
