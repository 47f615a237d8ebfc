"""The pictures a run leaves next to its dataset (and logs to MLflow):

    confusion_matrix.png  the final model on the test split (else on the validation split)
    rotation_confusion.png  with aux_rotation: the final fit's rotation head on the validation split
    gallery.png           per class, the 8 most and the 8 least confident accepted pseudo-labels
    thresholds.png        each class's acceptance threshold over the trials, as applied
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from autolabel.state import LoopState
from classification.fileio import atomic_path, write_figure
from classification.images import BadImage, decode
from classification.metrics import confusion_png
from classification.train.rotation import rotation_png

_logger = logging.getLogger(__name__)

THUMB, PAD, LABEL_W, TEXT_H, GAP = 64, 4, 110, 12, 16  # gallery layout, pixels


def write_pictures(state: LoopState, out: str | Path, cache) -> list[Path]:
    """Write the pictures a finished run's `LoopState` supports into `out`; returns their paths."""
    out = Path(out)
    written = []
    confusion = confusion_matrix(state, out / "confusion_matrix.png", cache)
    if confusion:
        written.append(confusion)
    rotation = rotation_png(state.model.best, out / "rotation_confusion.png") if state.model else None
    if rotation:
        written.append(rotation)
    acc = state.accepted
    if len(acc):
        written.append(gallery_png([state.data.pool.paths[i] for i in acc], state.labels[acc],
                                   state.confidence[acc], state.data.classes, out / "gallery.png"))
    if state.history:
        written.append(thresholds_png(state.history, state.data.classes, out / "thresholds.png", state.policy))
    return written


def confusion_matrix(state: LoopState, path: Path, cache) -> Path | None:
    """The final model's confusion on the test split, or on the human validation split when no
    test split was given (in head mode with refit the final model has also trained on it)."""
    data = state.data
    if state.test_pred is not None:
        y_true, y_pred, title = data.test.labels, state.test_pred, "Test split"
    elif len(data.val):
        y_true, y_pred = data.val.labels, state.model.predict(data.val, cache)
        seen = state.model.cfg.refit and state.model.mode == "head"
        title = "Validation split (seen by the refit)" if seen else "Validation split"
    else:
        return None
    ok = y_pred >= 0
    return confusion_png(y_true[ok], y_pred[ok], data.classes, path, title=title)




def gallery_png(paths: list[str], labels: np.ndarray, confidence: np.ndarray, classes: list[str],
                path: str | Path, k: int = 8) -> Path:
    """One row per class: its k most confident accepted images, a gap, its k least confident,
    each captioned with its confidence. A class with fewer than 2k shows each image once."""
    assert len(paths) == len(labels) == len(confidence)
    cell_w, cell_h = THUMB + PAD, THUMB + TEXT_H + PAD
    width = LABEL_W + 2 * k * cell_w + GAP
    canvas = Image.new("RGB", (width, TEXT_H + PAD + len(classes) * cell_h), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    draw.text((LABEL_W, 0), f"{k} most confident", fill="black", font=font)
    draw.text((LABEL_W + k * cell_w + GAP, 0), f"{k} least confident", fill="black", font=font)
    mid = LABEL_W + k * cell_w + GAP // 2 - PAD // 2
    draw.line([(mid, TEXT_H), (mid, canvas.height)], fill="grey")
    for c, name in enumerate(classes):
        top = TEXT_H + PAD + c * cell_h
        idx = np.flatnonzero(labels == c)
        idx = idx[np.argsort(-confidence[idx], kind="stable")]
        draw.text((PAD, top + THUMB // 2), f"{name[:12]} ({len(idx)})", fill="black", font=font)
        cells = [(col, i) for col, i in enumerate(idx[:k])]
        low = idx[max(k, len(idx) - k):]
        cells += [(2 * k - len(low) + col, i) for col, i in enumerate(low)]
        for col, i in cells:
            x = LABEL_W + col * cell_w + (GAP if col >= k else 0)
            canvas.paste(_thumbnail(paths[i]), (x, top))
            draw.text((x, top + THUMB + 1), f"{confidence[i]:.3f}", fill="black", font=font)
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def _thumbnail(path: str) -> Image.Image:
    try:
        img = Image.fromarray(decode(path, draft_size=THUMB))
    except BadImage as e:  # the file changed since it was labelled; show a grey tile, not a crash
        _logger.warning("gallery: %s: %s", path, e)
        return Image.new("RGB", (THUMB, THUMB), "lightgrey")
    img = ImageOps.contain(img, (THUMB, THUMB))  # small images (CIFAR's 32 px) are scaled up too
    tile = Image.new("RGB", (THUMB, THUMB), "white")
    tile.paste(img, ((THUMB - img.width) // 2, (THUMB - img.height) // 2))
    return tile


def thresholds_png(history: list[dict], classes: list[str], path: str | Path, policy: dict | None = None) -> Path:
    """Per-class thresholds as applied (the policy's tau_c, raised by a target precision's bars)
    against the trial number; with `policy` (its state_dict), flexmatch's tau and its floor
    flex_floor * tau as dashed lines, so a bar sitting on the floor reads as such."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [r["trial"] for r in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c, name in enumerate(classes):
        ax.plot(trials, [r["thresholds"][name] for r in history], marker="o", label=name,
                color=cmap(c % cmap.N))
    policy = policy or {}
    if "warmup" in policy:  # flexmatch
        ax.axhline(policy["threshold"], color="grey", ls="--", lw=1, label="tau (--threshold)")
        ax.axhline(policy["floor"] * policy["threshold"], color="grey", ls=":", lw=1, label="floor")
    ax.set_xlabel("trial")
    ax.set_ylabel("threshold applied")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(trials)
    ax.set_title("Per-class acceptance thresholds (as applied)")
    if len(classes) <= 30:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return write_figure(path, fig)
