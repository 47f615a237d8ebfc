"""Defect segmentation on neu_seg (1,200 train / 300 test, 200 px): supervised with 100 % and with
10 % of the train masks, and the pseudo-mask loop (`autolabel segment label`'s label_pool) with
the same 10 % as human masks and the rest of the train split as its pool, followed by one fit on
what it labelled. Test mean IoU over the defect classes, Dice, training and inference speed.

Run:  OMP_NUM_THREADS=2 python benchmarks/bench_segment.py [--data DIR] [--quick]
          [--head-epochs 4] [--epochs 12] [--epochs-10 40] [--batches 20] [--trials 3] [--threshold 0.9]
          [--rows sup100,sup10,loop] [--seed 0]
Each finished row is kept in benchmarks/results/bench_segment/ (weights + JSON) and the loop's run
folder resumes, so a rerun with the same settings picks up where a killed one stopped. Writes
benchmarks/results/bench_segment.json and prints markdown tables.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from classification.fileio import write_json
from segmentation.checkpoint import Segmenter
from segmentation.confidence import IMAGE_RULES
from segmentation.config import SegConfig
from segmentation.data import MaskSet, load_pairs, read_split, select
from segmentation.engine import fit
from segmentation.inference import make_runner, predict_probs
from segmentation.label import LabelHooks, LabelSpec, label_pool, training_arrays
from segmentation.models import create_segmenter, input_stats
from segmentation.train import evaluate, val_split
from segmentation.transforms import decode_pairs

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = RESULTS / "bench_segment"
_logger = logging.getLogger("bench_segment")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "neu_seg"))
    p.add_argument("--quick", action="store_true", help="60 train / 16 test images at 64 px, 2 trials: a smoke run")
    p.add_argument("--size", type=int, default=128, help="training crop side")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--head-epochs", type=int, default=4, help="stage 1 (encoder frozen) epochs")
    p.add_argument("--epochs", type=int, default=20, help="stage 2 epochs, the 100 %% row")
    p.add_argument("--epochs-10", type=int, default=40,
                   help="stage 2 epochs (of --batches batches), the 10 %% row and each loop fit")
    p.add_argument("--train-stages", type=int, default=-1, help="encoder stages stage 2 trains (-1: all)")
    p.add_argument("--head-lr", type=float, default=1e-2)
    p.add_argument("--encoder-lr", type=float, default=1e-4)
    p.add_argument("--decoder-lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=SegConfig.ema, help="decay of the weights' moving average (0: none)")
    p.add_argument("--patience", type=int, default=SegConfig.patience, help="early stopping: epochs without a better val mIoU")
    p.add_argument("--plateau-patience", type=int, default=SegConfig.plateau_patience, help="ReduceLROnPlateau patience")
    p.add_argument("--fraction", type=float, default=0.1, help="share of train masks the 10 %% rows keep")
    p.add_argument("--batches", type=int, default=20,
                   help="batches per epoch for the 10 %% row and every loop fit (one size of epoch for any set)")
    p.add_argument("--trials", type=int, default=3, help="loop trials")
    p.add_argument("--rule", default="defect_mean", choices=list(IMAGE_RULES))
    p.add_argument("--threshold", type=float, default=0.9, help="image confidence to accept a pseudo-mask")
    p.add_argument("--rows", default="sup100,sup10,loop")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="training seed: initialisation, batches and the 10 %% "
                   "rows' validation images (the human masks stay the same)")
    return p.parse_args()


def load(args) -> dict:
    root = Path(args.data)
    pairs = load_pairs(root / "images", root / "masks")
    train, test = select(pairs, read_split(root / "splits" / "train.txt"), "train.txt")
    if args.quick:
        train, test = train.subset(range(60)), test.subset(range(16))
    start = time.perf_counter()
    data = {"classes": pairs.classes, "train": decode_pairs(train, None), "test": decode_pairs(test, None),
            "train_set": train}
    _logger.info("decoded %d + %d pairs in %.0f s", len(train), len(test), time.perf_counter() - start)
    return data


def config(args, epochs: int) -> SegConfig:
    return SegConfig(size=args.size, batch_size=args.batch_size, head_epochs=args.head_epochs, epochs=epochs,
                     train_stages=args.train_stages, head_lr=args.head_lr, encoder_lr=args.encoder_lr,
                     decoder_lr=args.decoder_lr, threads=args.threads, val_fraction=0.0, patience=args.patience,
                     plateau_patience=args.plateau_patience, tta=True, ema=args.ema, seed=args.seed)


def cached_fit(name: str, cfg: SegConfig, train, val, classes, pseudo=(), key_extra=None) -> tuple[Segmenter, dict]:
    """fit(), or the row saved by an earlier run with the same settings and data (`key_extra`:
    whatever else decided the training set)."""
    key = hashlib.blake2b(json.dumps([cfg.to_dict(), len(train), len(pseudo), len(val), key_extra],
                                     sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
    meta_path, state_path = ROWS / f"{name}.json", ROWS / f"{name}.pt"
    model = create_segmenter(cfg.encoder, len(classes), None, cfg.decoder_channels())
    if meta_path.is_file() and state_path.is_file() and json.loads(meta_path.read_text())["key"] == key:
        model.load_state_dict(torch.load(state_path, weights_only=True))
        _logger.info("%s: reusing the saved row", name)
        meta = json.loads(meta_path.read_text())
    else:
        start = time.perf_counter()
        result = fit(cfg, train, val, classes, pseudo=pseudo, on_epoch=lambda h: _logger.info(
            "%s %s epoch %d: train loss %.3f (%.1f img/s), val loss %.3f, val mIoU %.3f", name, h["stage"],
            h["epoch"], h["train_loss"], h["train_img_s"], h["val_loss"], h["val_miou"]))
        model = result.model
        meta = {"key": key, "best": result.best, "history": result.history, "n_train": result.n_train,
                "train_img_s": sum(h["train_img_s"] for h in result.history) / len(result.history),
                "train_seconds": result.train_seconds, "wall_seconds": time.perf_counter() - start}
        ROWS.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), state_path)
        write_json(meta_path, meta)
    return Segmenter(model.eval(), classes, cfg, *input_stats(model)), meta


def row(name: str, seg: Segmenter, meta: dict, test, extra: dict | None = None) -> dict:
    s = evaluate(seg, test, tta=True, runtime="onnx", cache_root=RESULTS / "cache")["scores"]
    plain = evaluate(seg, test, tta=False, runtime="onnx", cache_root=RESULTS / "cache")["scores"]
    out = {"row": name, "test_miou": s["miou"], "test_dice": s["dice"], "test_miou_all": s["miou_all"],
           "test_miou_no_tta": plain["miou"], "per_class": s["per_class"], "n_train": meta["n_train"],
           "train_img_s": meta["train_img_s"], "train_seconds": meta["train_seconds"],
           "wall_seconds": meta["wall_seconds"], "best_epoch": meta["best"]["epoch"], **(extra or {})}
    _logger.info("%s: test mean IoU %.3f (TTA), %.3f (plain)", name, s["miou"], plain["miou"])
    return out


def human_split(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    k = max(2, int(round(fraction * n)))
    return np.sort(order[:k]), np.sort(order[k:])


def loop_folders(train: MaskSet, human_idx: np.ndarray, where: Path) -> tuple[Path, Path]:
    """An image folder of every train image and a mask folder of the human share, as links: the
    layout `autolabel segment label` reads (the images without a mask are its pool)."""
    images, masks = where / "images", where / "masks"
    for folder in (images, masks):
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(train)):
        link = images / Path(train.images[i]).name
        if not link.exists():
            link.symlink_to(Path(train.images[i]).resolve())
    for i in human_idx:
        link = masks / Path(train.masks[i]).name
        if not link.exists():
            link.symlink_to(Path(train.masks[i]).resolve())
    return images, masks


def run_loop(args, data, cfg: SegConfig, human_idx: np.ndarray) -> tuple[list[dict], list[dict]]:
    """The shipped pseudo-mask loop (segmentation.label.label_pool) on the train split with the
    human share's masks, then one fit on what it labelled (human + accepted pseudo-masks): the
    model a user gets from the loop's labels. Returns (the final row, the trial records)."""
    root = Path(args.data)
    key = hashlib.blake2b(json.dumps([cfg.to_dict(), args.trials, args.threshold, args.rule, args.quick,
                                      human_idx.tolist()]).encode(), digest_size=6).hexdigest()
    where = ROWS / f"loop_{key}"
    images, masks = loop_folders(data["train_set"], human_idx, where)
    spec = LabelSpec(images=images, masks=masks, out=where / "run", n_trials=args.trials,
                     threshold=args.threshold, truth_masks=root / "masks", classes=root / "classes.csv",
                     rule=args.rule, resume=(where / "run" / "state.json").is_file())
    start = time.perf_counter()
    run = label_pool(spec, cfg, LabelHooks(on_trial=lambda r: _logger.info(
        "loop trial %d: accepted %d (%d of %d in all), pseudo mIoU %s, val mIoU %.3f", r["trial"], r["accepted"],
        r["accepted_total"], r["accepted_total"] + r["pool_left"], r.get("pseudo_miou"), r["val_miou"])))
    loop_seconds = time.perf_counter() - start
    train, pseudo, val = training_arrays(run)
    seg, meta = cached_fit("loop_final", cfg, train, val, data["classes"], pseudo,
                           key_extra=[key, sorted(run.accepted)])
    meta = {**meta, "wall_seconds": meta["wall_seconds"] + loop_seconds}
    last = run.records[-1]
    extra = {"accepted": last["accepted_total"], "pool": len(run.pool), "pseudo_miou": last.get("pseudo_miou"),
             "pixels_kept": last.get("pixels_kept"), "loop_seconds": loop_seconds}
    return row(f"loop, {args.fraction:.0%} human masks, {len(run.records)} trials, τ {args.threshold}",
               seg, meta, data["test"], extra), run.records


def speed(seg: Segmenter, test) -> dict:
    """Inference img/s on the test images (padded to 224), eager PyTorch vs ONNX Runtime, no TTA."""
    images = [a for a, _ in test][:96]
    out = {}
    for runtime in ("torch", "onnx"):
        run = make_runner(seg.model, runtime, "cpu", RESULTS / "cache")
        list(predict_probs(run, images[:8], seg.mean, seg.std))  # warm-up (and the export)
        start = time.perf_counter()
        list(predict_probs(run, images, seg.mean, seg.std, batch_size=16))
        out[f"{runtime}_img_s"] = len(images) / (time.perf_counter() - start)
    return out


def markdown(rows: list[dict], trials: list[dict], inference: dict) -> str:
    lines = ["| row | train masks | test mIoU (defects) | Dice | mIoU (+bg) | mIoU no TTA | train img/s | "
             "train s | wall s | pseudo-masks | pseudo mIoU |", "|" + " --- |" * 11]
    for r in rows:
        acc = f"{r['accepted']}/{r['pool']}" if "accepted" in r else ""
        pm = f"{r['pseudo_miou']:.3f}" if r.get("pseudo_miou") is not None else ""
        lines.append(f"| {r['row']} | {r['n_train']} | {r['test_miou']:.3f} | {r['test_dice']:.3f} | "
                     f"{r['test_miou_all']:.3f} | {r['test_miou_no_tta']:.3f} | {r['train_img_s']:.1f} | "
                     f"{r['train_seconds']:.0f} | {r['wall_seconds']:.0f} | {acc} | {pm} |")
    if trials:
        lines += ["", "| loop trial | trained on | accepted | accepted in all | pseudo mIoU | pixels kept | "
                  "val mIoU | s |", "|" + " --- |" * 8]
        lines += [f"| {t['trial']} | {t['train_size']} | {t['accepted']} | {t['accepted_total']} | "
                  f"{_num(t.get('pseudo_miou'))} | {_num(t.get('pixels_kept'))} | {_num(t['val_miou'])} | "
                  f"{t['seconds']:.0f} |" for t in trials]
    if inference:
        lines += ["", "| inference (224 px, batch 16) | img/s |", "| --- | --- |",
                  f"| eager PyTorch | {inference['torch_img_s']:.1f} |",
                  f"| ONNX Runtime | {inference['onnx_img_s']:.1f} |"]
    return "\n".join(lines)


def _num(x) -> str:
    return "" if x is None else f"{x:.3f}"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args()
    if args.quick:
        args.epochs, args.epochs_10, args.trials, args.batches, args.size = 1, 1, 2, 2, 64
        args.head_epochs, args.fraction = 1, 0.3
        global ROWS
        ROWS = RESULTS / "bench_segment_quick"
    start, wanted = time.perf_counter(), args.rows.split(",")
    data = load(args)
    classes, train = data["classes"], data["train"]
    rows, trials, inference = [], [], {}
    if "sup100" in wanted:
        tr, va = val_split(len(train), 0.125, 0)
        seg, meta = cached_fit("sup100", config(args, args.epochs), [train[i] for i in tr],
                               [train[i] for i in va], classes)
        rows.append(row("supervised 100 %", seg, meta, data["test"]))
        inference = speed(seg, data["test"])
    human_idx, _ = human_split(len(train), args.fraction)
    small = config(args, args.epochs_10).with_(batches_per_epoch=args.batches, val_fraction=0.15)
    if "sup10" in wanted:
        tr, va = val_split(len(human_idx), small.val_fraction, small.seed)  # the loop's own split
        seg10, meta = cached_fit("sup10", small.with_(val_fraction=0.0), [train[human_idx[i]] for i in tr],
                                 [train[human_idx[i]] for i in va], classes)
        rows.append(row(f"supervised {args.fraction:.0%}", seg10, meta, data["test"]))
    if "loop" in wanted:
        loop_row, trials = run_loop(args, data, small, human_idx)
        rows.append(loop_row)
    report = {"args": vars(args), "rows": rows, "trials": trials, "inference": inference,
              "wall_seconds": time.perf_counter() - start}
    write_json(RESULTS / ("bench_segment_quick.json" if args.quick else "bench_segment.json"), report)
    print(markdown(rows, trials, inference))


if __name__ == "__main__":
    main()
