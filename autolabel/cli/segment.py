"""`autolabel segment train`, `predict` and `label`: defect segmentation (seed 002) and the
pseudo-mask loop."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from autolabel.cli.common import print_skips, progress_enabled
from autolabel.cli.options import EXPERIMENT, TRACKING_URI, mlflow_switch
from autolabel.tracking_tools import tracking_choice
from classification.registry import check_name
from classification.runtime import RUNTIMES
from segmentation.config import load_seg_config
from segmentation.label import LabelHooks, LabelSpec, label_pool
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


@app.command("label")
def label(
    ctx: typer.Context,
    images: Path = typer.Option(..., help="Every image (any depth); those without a mask in --masks are labelled."),
    masks: Path = typer.Option(..., help="Human masks: PNGs of class indices (0 = background), same stems."),
    out: Path = typer.Option(..., "--out", help="Output folder: masks/, dataset.csv, metrics.json, state.json."),
    n_trials: int = typer.Option(3, "--n-trials", help="Trials: train, predict the pool, accept."),
    threshold: float = typer.Option(0.9, help="Confidence to accept an image's pseudo-mask; less sure pixels are "
                                    "written as 255 (ignored in training)."),
    truth_masks: Optional[Path] = typer.Option(None, "--truth-masks", help="The pool's true masks: each trial "
                                               "reports the mean IoU of the accepted pseudo-masks."),
    classes: Optional[Path] = typer.Option(None, help="index,name CSV (default: classes.csv in or beside --masks)."),
    config: Optional[Path] = typer.Option(None, help="YAML with a train: section (each trial's training)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out after its last completed trial."),
    epochs: Optional[int] = typer.Option(None, help="Whole-network epochs per trial."),
    size: Optional[int] = typer.Option(None, help="Training crop side, a multiple of 32."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda."),
    mlflow: Optional[bool] = mlflow_switch("Track the loop in MLflow (a parent run, a child per trial)"),
    tracking_uri: Optional[str] = TRACKING_URI,
    experiment: Optional[str] = EXPERIMENT,
):
    """Label the masks of the images that have none: train, predict, accept confident pseudo-masks, repeat."""
    cfg = load_seg_config(config, epochs=epochs, size=size, device=device)
    spec = LabelSpec(images, masks, out, n_trials, threshold, truth_masks, classes, resume=resume)
    tracking = tracking_choice(mlflow, tracking_uri, experiment, ctx.find_root().params)
    tracker = _label_tracker(tracking, spec, cfg)
    hooks = LabelHooks(tracker.begin, tracker.on_epoch, tracker.on_trial) if tracker else LabelHooks()
    try:
        run = label_pool(spec, cfg, hooks, progress=progress_enabled())
    except BaseException as e:
        if tracker:
            tracker.fail("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        if isinstance(e, KeyboardInterrupt) and (out / "state.json").is_file():
            typer.echo("interrupted; continue after the last completed trial with the same command and --resume")
        raise
    if tracker:
        tracker.finish(run, out)
    for r in run.records:
        iou = f", pseudo-mask mean IoU {r['pseudo_miou']:.3f}" if r.get("pseudo_miou") is not None else ""
        typer.echo(f"trial {r['trial']}: accepted {r['accepted']} (total {r['accepted_total']} of "
                   f"{len(run.pool)}), mean confidence {r['mean_confidence']:.3f}{iou}")
    if not run.left:
        typer.echo("every pool image has an accepted pseudo-mask: nothing left to label")
    print_skips(typer.echo, run.skipped)
    typer.echo(f"{len(run.human)} human masks, {len(run.accepted)} pseudo-masks -> {out / 'dataset.csv'}")
    if tracker and tracker.describe():
        typer.echo(tracker.describe())


def _label_tracker(tracking: dict | None, spec: LabelSpec, cfg):
    """The loop's MLflow tracker, started by the loop once its inputs are checked; None: off."""
    if tracking is None:
        return None
    from autolabel.tracking_segment import tracker_for

    config = {"train": cfg.to_dict(), "loop": {"n_trials": spec.n_trials, "threshold": spec.threshold,
                                               "rule": spec.rule},
              "data": {"images": str(spec.images), "masks": str(spec.masks),
                       "truth_masks": str(spec.truth_masks) if spec.truth_masks else None}}
    return tracker_for(spec.out, config, tracking)
