"""`autolabel localize train` and `autolabel localize predict`: a class and one box per image."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from autolabel.cli.common import print_skips, progress_enabled
from autolabel.settings import default_cache_dir, open_cache
from classification.data import load_unlabeled
from classification.fileio import write_csv
from classification.registry import check_name
from classification.runtime import RUNTIMES
from localization.checkpoint import load_localizer
from localization.config import load_localize_config
from localization.data import load_boxes
from localization.predict import predict_images
from localization.report import train_and_report

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Classify images and draw one box each (class head + box head on a timm backbone).")


@app.command("train")
def train(
    data: Path = typer.Option(..., "--data", help="CSV path,label,x0,y0,x1,y1 (original pixels; paths relative "
                              "to it; empty box = label only), or a folder per class with such a CSV."),
    out: Path = typer.Option(..., "--out", help="Folder to write: checkpoint, metrics.json, curves.png, best_worst.png."),
    model: Optional[str] = typer.Option(None, help="timm backbone (default: tf_efficientnet_lite0)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of the last stage (the heads' with --unfreeze 0)."),
    unfreeze: Optional[int] = typer.Option(None, help="Last N blocks trained in stage 2 (0: heads only)."),
    box_weight: Optional[float] = typer.Option(None, "--box-weight", help="Weight of the smooth-L1 box loss."),
    config: Optional[Path] = typer.Option(None, help="A versioned YAML, e.g. configs/localize/v3.yaml; flags override it."),
    img_size: Optional[int] = typer.Option(None, help="Model input side (default: 224)."),
    resize: Optional[str] = typer.Option(None, help="letterbox (longest side + pad) | stretch."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    test: Optional[Path] = typer.Option(None, help="A box CSV to score on and draw the best/worst from."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache for trunk maps and ONNX exports (default: ~/.cache/autolabel)."),
):
    """Train a class + box model and write its checkpoint folder with metrics and pictures."""
    cfg = load_localize_config(config).with_flags(model=model, epochs=epochs, unfreeze=unfreeze, box_weight=box_weight,
                                         img_size=img_size, resize=resize, seed=seed)
    boxes = load_boxes(data)
    held = load_boxes(test, classes=boxes.images.classes) if test is not None else None
    metrics = train_and_report(boxes, out, cfg, open_cache(cache_dir), test=held, progress=progress_enabled())
    best = metrics["best_epoch"]
    typer.echo(f"config {metrics['version']}: trained on {metrics['n_train']} images "
               f"({metrics['n_train_boxes']} with a box), validated on {metrics['n_val']}; best epoch "
               f"{best.get('epoch')} ({best.get('stage')}) val mean IoU {best.get('val_mean_iou', float('nan')):.3f}")
    for split in ("validation", "test"):
        if split in metrics:
            s = metrics[split]
            typer.echo(f"{split}: accuracy {s['accuracy']:.3f}, mean IoU {s['mean_iou']:.3f} "
                       f"(mean box {s['mean_box_iou']:.3f}), IoU >= 0.5 {s['iou50']:.3f}")
    print_skips(typer.echo, [(s["path"], s["reason"]) for s in metrics["skipped"]])
    typer.echo(f"checkpoint: {out}")


@app.command("predict")
def predict(
    checkpoint: Path = typer.Option(..., help="A folder written by `autolabel localize train`."),
    images: Path = typer.Option(..., help="Images: a folder (any depth) or a CSV with a path column."),
    out: Path = typer.Option(..., "--out", help="CSV to write: path,label,confidence,x0,y0,x1,y1 (original pixels)."),
    tta: bool = typer.Option(False, "--tta/--no-tta", help="Also predict the mirrored image; merge the two and "
                             "add an agreement column (IoU of the two boxes)."),
    runtime: str = typer.Option("auto", help="auto (ONNX Runtime on CPU) | onnx | torch."),
    batch_size: int = typer.Option(32),
    workers: Optional[int] = typer.Option(None, help="Decoding processes (default: cores - 1)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Where the ONNX export is cached (default: ~/.cache/autolabel)."),
):
    """Predict a class and a box for every image."""
    check_name("runtime", runtime, ("auto", *RUNTIMES))
    trained = load_localizer(checkpoint)
    pool = load_unlabeled(images)
    start = time.perf_counter()
    preds = predict_images(trained, pool, runtime=runtime, tta=tta, batch_size=batch_size, workers=workers,
                           cache_root=cache_dir if cache_dir is not None else default_cache_dir(),
                           progress=progress_enabled())
    frame = preds.frame(tta)
    write_csv(out, frame)
    typer.echo(f"predicted {len(frame)} images -> {out} ({preds.ms_per_image:.1f} ms per image, "
               f"{time.perf_counter() - start:.1f} s with the export)")
    print_skips(typer.echo, pool.skipped + preds.skipped)
