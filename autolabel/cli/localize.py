"""`autolabel localize train|predict|label`: a class and one box per image; `label` grows a box
dataset from a few human boxes and a pool of unlabelled images (pseudo-boxes)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from autolabel.cli.common import print_skips, progress_enabled
from autolabel.cli.options import EXPERIMENT, TRACKING_URI, mlflow_switch
from autolabel.localize_label import LabelRequest, run_label
from autolabel.settings import default_cache_dir, open_cache
from autolabel.tracking_tools import tracking_choice
from classification.data import load_unlabeled
from classification.fileio import write_csv
from classification.registry import check_name
from classification.runtime import RUNTIMES
from localization.checkpoint import load_localizer
from localization.config import load_localize_config
from localization.data import load_boxes
from localization.labeling import LabelSpec
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


@app.command("label")
def label(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="Human boxes: a CSV path,label,x0,y0,x1,y1 (original pixels), "
                              "or a folder per class with such a CSV."),
    data_raw: Path = typer.Option(..., "--data-raw", help="Unlabelled pool: a folder of images (any depth) or a "
                                  "CSV with a path column; images also in --data are left out."),
    out: Path = typer.Option(..., "--out", help="Folder to write: dataset.csv, metrics.json, model/, "
                             "trials/trial_NN.csv, state.json."),
    n_trials: int = typer.Option(3, "--n-trials", help="Trials (train, predict the pool, accept)."),
    threshold: float = typer.Option(0.9, "--threshold", help="Accept an image when its class confidence and "
                                    "the IoU of its views' boxes (plain and mirrored, every teacher) both reach this."),
    teachers: int = typer.Option(LabelSpec.teachers, "--teachers", help="Heads trained per trial with consecutive "
                                 "seeds; the pseudo-box is their views' mean and all their boxes must agree."),
    truth: Optional[Path] = typer.Option(None, help="Box CSV of pool images: report class precision and mean "
                                         "IoU of what was accepted (never trained on)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out after its last completed "
                                "trial (same inputs and settings; --n-trials may be larger)."),
    config: Optional[Path] = typer.Option(None, help="A versioned YAML, e.g. configs/localize/v3.yaml; flags override it."),
    model: Optional[str] = typer.Option(None, help="timm backbone (default: tf_efficientnet_lite0)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of the last stage, per trial."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache for trunk maps and ONNX exports (default: ~/.cache/autolabel)."),
    mlflow: Optional[bool] = mlflow_switch("Track the run in MLflow: a parent run and one child per trial"),
    tracking_uri: Optional[str] = TRACKING_URI,
    experiment: Optional[str] = EXPERIMENT,
):
    """Pseudo-box loop: train on human + accepted boxes, predict the pool with flip TTA, accept, repeat."""
    spec = LabelSpec(n_trials=n_trials, threshold=threshold, teachers=teachers)
    cfg = load_localize_config(config).with_flags(model=model, epochs=epochs, seed=seed)
    req = LabelRequest(data, data_raw, out, spec, cfg, truth=truth, cache_dir=cache_dir, resume=resume,
                       tracking=tracking_choice(mlflow, tracking_uri, experiment, ctx.find_root().params), progress=progress_enabled(),
                       echo=typer.echo)
    metrics = run_label(req, on_trial=lambda record, outcome: typer.echo(_trial_line(record)))
    final = metrics["final"]
    typer.echo(f"accepted {final['n_accepted']} of {final['n_pool']} pool images in {final['trials_run']} "
               f"trial(s) -> {out / 'dataset.csv'}")
    print_skips(typer.echo, [(s["path"], s["reason"]) for s in metrics["skipped"]])


def _trial_line(record: dict) -> str:
    line = (f"trial {record['trial']}: trained on {record['n_train']}, accepted {record['accepted']} "
            f"({record['accepted_total']} of {record['pool']} in all)")
    if record.get("class_precision") is not None:
        line += f"; class precision {record['class_precision']:.3f}"
    if record.get("mean_iou") is not None:
        line += f", mean IoU {record['mean_iou']:.3f}"
    return line
