"""`autolabel segment train` and `autolabel segment predict`: defect segmentation (seed 002)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autolabel.cli.common import print_skips, progress_enabled
from classification.registry import check_name
from classification.runtime import RUNTIMES
from segmentation.config import load_seg_config
from segmentation.predict import PredictSpec, predict_folder
from segmentation.train import TrainSpec, train_segmenter

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Segmentation: a UNet on a timm encoder, trained on image + mask pairs.")


@app.command("train")
def train(
    images: Path = typer.Option(..., help="Image folder (any depth)."),
    masks: Path = typer.Option(..., help="Mask folder: PNGs of class indices (0 = background), same stems."),
    out: Path = typer.Option(..., "--out", help="Checkpoint folder to write."),
    classes: Optional[Path] = typer.Option(None, help="index,name CSV (default: classes.csv in or beside --masks, else class_<i>)."),
    split: Optional[Path] = typer.Option(None, help="Training stems, one a line; the other pairs are the test set."),
    test_split: Optional[Path] = typer.Option(None, "--test-split", help="Test stems (default: the pairs not in --split)."),
    encoder: Optional[str] = typer.Option(None, help="timm encoder (default: tf_efficientnet_lite0)."),
    weights: Optional[Path] = typer.Option(None, help="Encoder state-dict file (any timm encoder)."),
    epochs: Optional[int] = typer.Option(None, help="Whole-network epochs (default: 30, early stopping)."),
    size: Optional[int] = typer.Option(None, help="Training crop side, a multiple of 32 (default: 192)."),
    loss: Optional[str] = typer.Option(None, help="dicebce | tversky | cedice (default: dicebce)."),
    config: Optional[Path] = typer.Option(None, help="YAML with a train: section; flags override it."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default: 0)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda."),
):
    """Train a UNet on image/mask pairs; write the checkpoint, metrics.json and pictures."""
    cfg = load_seg_config(config, encoder=encoder, weights=str(weights) if weights else None,
                          epochs=epochs, size=size, loss=loss, seed=seed, device=device)
    spec = TrainSpec(images, masks, classes, split, test_split)
    metrics = train_segmenter(spec, cfg, out, progress=progress_enabled())
    best = metrics["best_epoch"]
    typer.echo(f"trained on {metrics['n_train']} pairs (validation {metrics['n_val']}); best epoch "
               f"{best['epoch']} ({best['stage']}), validation mean IoU {best['val_miou']:.3f}")
    for split_name in ("test", "val"):
        if split_name in metrics:
            s = metrics[split_name]
            typer.echo(f"{split_name}: mean IoU {s['miou']:.3f} (defect classes), {s['miou_all']:.3f} "
                       f"(with background); Dice {s['dice']:.3f}")
            break
    print_skips(typer.echo, [(s["path"], s["reason"]) for s in metrics["skipped"]])
    typer.echo(f"checkpoint: {out}")


@app.command("predict")
def predict(
    checkpoint: Path = typer.Option(..., help="A folder written by `autolabel segment train`."),
    images: Path = typer.Option(..., help="Images to segment (a folder, any depth)."),
    out: Path = typer.Option(..., "--out", help="Output folder: masks/, overlays/, predictions.csv."),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Average flipped views (default: the checkpoint's setting)."),
    runtime: str = typer.Option("auto", help="auto (ONNX Runtime on CPU) | onnx | torch."),
    cache_dir: Optional[Path] = typer.Option(None, help="Where the ONNX export is cached."),
):
    """Write one mask PNG (class indices, original size) and one overlay PNG per image."""
    check_name("runtime", runtime, ("auto", *RUNTIMES))
    frame, skipped = predict_folder(PredictSpec(checkpoint, images, out, tta, runtime, cache_dir=cache_dir),
                                    progress=progress_enabled())
    typer.echo(f"predicted {len(frame)} images -> {out / 'masks'}, {out / 'overlays'}")
    print_skips(typer.echo, skipped)
