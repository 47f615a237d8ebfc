"""Defect segmentation on neu_seg (1,200 train / 300 test, 200 px): supervised with 100 % and with
10 % of the train masks, and a prototype of the pseudo-mask loop (10 % human masks, the rest a
pool: train, predict the pool with flip TTA, accept images whose confidence passes a threshold,
ignore unsure pixels in the loss, retrain from the last weights; a few rounds).

Run:  OMP_NUM_THREADS=2 nice -n 10 python benchmarks/bench_segment.py [--data DIR] [--quick]
          [--size 128] [--epochs 12] [--rounds 3] [--rule defect_mean] [--threshold 0.9] ...
Each finished row is kept in benchmarks/results/bench_segment/ (weights + JSON): a rerun with the
same settings picks it up, so a killed run resumes. Writes benchmarks/results/bench_segment.json
and prints markdown tables. The loop here is a prototype; the shared loop replaces it.
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
from segmentation.confidence import IMAGE_RULES, decide_pool
from segmentation.config import SegConfig
from segmentation.data import load_pairs, read_split, select
from segmentation.engine import fit
from segmentation.inference import make_runner, predict_probs
from segmentation.metrics import pseudo_mask_scores
from segmentation.models import create_segmenter, input_stats
from segmentation.train import evaluate, val_split
from segmentation.transforms import decode_pairs

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = RESULTS / "bench_segment"
_logger = logging.getLogger("bench_segment")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "neu_seg"))
    p.add_argument("--quick", action="store_true", help="60 train / 16 test images at 64 px, 2 rounds: a smoke run")
    p.add_argument("--size", type=int, default=128, help="training crop side")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--head-epochs", type=int, default=6, help="stage 1 (encoder frozen) epochs")
    p.add_argument("--epochs", type=int, default=3, help="stage 2 epochs, the 100 %% row")
    p.add_argument("--epochs-10", type=int, default=25, help="stage 2 epochs, the 10 %% row")
    p.add_argument("--train-stages", type=int, default=1, help="encoder stages stage 2 trains (-1: all)")
    p.add_argument("--head-lr", type=float, default=1e-2)
    p.add_argument("--encoder-lr", type=float, default=1e-4)
    p.add_argument("--decoder-lr", type=float, default=1e-3)
    p.add_argument("--fraction", type=float, default=0.1, help="share of train masks the 10 %% rows keep")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--round-epochs", type=int, default=4, help="epochs per loop round (warm start)")
    p.add_argument("--rule", default="defect_mean", choices=list(IMAGE_RULES))
    p.add_argument("--threshold", type=float, default=0.9, help="image confidence to accept a pseudo-mask")
    p.add_argument("--pixel-threshold", type=float, default=0.9, help="pixels below it are ignored in the loss")
    p.add_argument("--rows", default="sup100,sup10,loop")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def load(args) -> dict:
    root = Path(args.data)
    pairs = load_pairs(root / "images", root / "masks")
    train, test = select(pairs, read_split(root / "splits" / "train.txt"), "train.txt")
    if args.quick:
        train, test = train.subset(range(60)), test.subset(range(16))
    start = time.perf_counter()
    data = {"classes": pairs.classes, "train": decode_pairs(train, None), "test": decode_pairs(test, None)}
    _logger.info("decoded %d + %d pairs in %.0f s", len(train), len(test), time.perf_counter() - start)
    return data


def config(args, epochs: int) -> SegConfig:
    return SegConfig(size=args.size, batch_size=args.batch_size, head_epochs=args.head_epochs, epochs=epochs,
                     train_stages=args.train_stages, head_lr=args.head_lr, encoder_lr=args.encoder_lr,
                     decoder_lr=args.decoder_lr, threads=args.threads, val_fraction=0.0, patience=5, tta=True)


def cached_fit(name: str, cfg: SegConfig, train, val, classes, init=None, key_extra=None) -> tuple[Segmenter, dict]:
    """fit(), or the row saved by an earlier run with the same settings and data (`key_extra`:
    whatever else decided the training set)."""
    key = hashlib.blake2b(json.dumps([cfg.to_dict(), len(train), len(val), init is not None, key_extra],
                                     sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
    meta_path, state_path = ROWS / f"{name}.json", ROWS / f"{name}.pt"
    model = create_segmenter(cfg.encoder, len(classes), None, cfg.decoder_channels())
    if meta_path.is_file() and state_path.is_file() and json.loads(meta_path.read_text())["key"] == key:
        model.load_state_dict(torch.load(state_path, weights_only=True))
        _logger.info("%s: reusing the saved row", name)
        meta = json.loads(meta_path.read_text())
    else:
        start = time.perf_counter()
        result = fit(cfg, train, val, classes, init_state=init, on_epoch=lambda h: _logger.info(
            "%s %s epoch %d: train loss %.3f (%.1f img/s), val loss %.3f, val mIoU %.3f", name, h["stage"],
            h["epoch"], h["train_loss"], h["train_img_s"], h["val_loss"], h["val_miou"]))
        model = result.model
        meta = {"key": key, "best": result.best, "history": result.history, "n_train": len(train),
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


def rule_sweep(probs, truth, classes, pixel_threshold: float) -> list[dict]:
    """How each image rule and threshold would choose on this pool: count and pseudo-mask quality."""
    out = []
    for rule in IMAGE_RULES:
        for tau in (0.0, 0.8, 0.9, 0.95):
            conf, ok, masks = decide_pool(probs, rule, tau, pixel_threshold)
            chosen = np.flatnonzero(ok)
            out.append({"rule": rule, "threshold": tau, "accepted": int(ok.sum()),
                        **pseudo_mask_scores([masks[i] for i in chosen], [truth[i] for i in chosen], classes)})
    return out


def run_loop(args, data, seg10: Segmenter, human, pool, val) -> tuple[list[dict], list[dict]]:
    """Rounds of predict pool -> decide -> retrain (warm start). Returns (rows, the first sweep)."""
    classes, rows, sweep, seg = data["classes"], [], [], seg10
    pool_imgs, pool_truth = [a for a, _ in pool], [m for _, m in pool]
    for r in range(1, args.rounds + 1):
        start = time.perf_counter()
        run = make_runner(seg.model, "onnx", "cpu", RESULTS / "cache")
        probs = list(predict_probs(run, pool_imgs, seg.mean, seg.std, tta=True))
        predict_s = time.perf_counter() - start
        if r == 1:
            sweep = rule_sweep(probs, pool_truth, classes, args.pixel_threshold)
        conf, ok, masks = decide_pool(probs, args.rule, args.threshold, args.pixel_threshold)
        chosen = np.flatnonzero(ok)
        quality = pseudo_mask_scores([masks[i] for i in chosen], [pool_truth[i] for i in chosen], classes)
        train = human + [(pool_imgs[i], masks[i]) for i in chosen]
        cfg = config(args, args.round_epochs).with_(head_epochs=0, seed=r)
        seg, meta = cached_fit(f"loop_round{r}", cfg, train, val, classes, init=seg.model.state_dict(),
                               key_extra=[args.rule, args.threshold, args.pixel_threshold, chosen.tolist()])
        rows.append(row(f"loop round {r}", seg, meta, data["test"],
                        {"accepted": int(ok.sum()), "pool": len(pool), **quality, "predict_seconds": predict_s}))
    return rows, sweep


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


def markdown(rows: list[dict], sweep: list[dict], inference: dict) -> str:
    lines = ["| row | train masks | test mIoU (defects) | Dice | mIoU (+bg) | mIoU no TTA | train img/s | "
             "train s | wall s | accepted | pseudo mIoU |", "|" + " --- |" * 11]
    for r in rows:
        acc = f"{r['accepted']}/{r['pool']}" if "accepted" in r else ""
        pm = f"{r['pseudo_miou']:.3f}" if "pseudo_miou" in r else ""
        lines.append(f"| {r['row']} | {r['n_train']} | {r['test_miou']:.3f} | {r['test_dice']:.3f} | "
                     f"{r['test_miou_all']:.3f} | {r['test_miou_no_tta']:.3f} | {r['train_img_s']:.1f} | "
                     f"{r['train_seconds']:.0f} | {r['wall_seconds']:.0f} | {acc} | {pm} |")
    if inference:
        lines += ["", "| inference (224 px, batch 16) | img/s |", "| --- | --- |",
                  f"| eager PyTorch | {inference['torch_img_s']:.1f} |",
                  f"| ONNX Runtime | {inference['onnx_img_s']:.1f} |"]
    if sweep:
        lines += ["", "| round-1 pool: rule | threshold | accepted | pseudo mIoU | pixels kept |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {s['rule']} | {s['threshold']} | {s['accepted']} | {s['pseudo_miou']:.3f} | "
                  f"{s['pixels_kept']:.3f} |" for s in sweep]
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args()
    if args.quick:
        args.epochs, args.epochs_10, args.rounds, args.round_epochs, args.size = 1, 1, 2, 1, 64
        args.head_epochs, args.fraction = 1, 0.3
        global ROWS
        ROWS = RESULTS / "bench_segment_quick"
    start, wanted = time.perf_counter(), args.rows.split(",")
    data = load(args)
    classes, train = data["classes"], data["train"]
    rows, sweep, inference = [], [], {}
    if "sup100" in wanted:
        tr, va = val_split(len(train), 0.125, 0)
        seg, meta = cached_fit("sup100", config(args, args.epochs), [train[i] for i in tr],
                               [train[i] for i in va], classes)
        rows.append(row("supervised 100 %", seg, meta, data["test"]))
        inference = speed(seg, data["test"])
    human_idx, pool_idx = human_split(len(train), args.fraction)
    tr, va = val_split(len(human_idx), 0.15, 0)
    human, val = [train[human_idx[i]] for i in tr], [train[human_idx[i]] for i in va]
    if "sup10" in wanted or "loop" in wanted:
        seg10, meta = cached_fit("sup10", config(args, args.epochs_10), human, val, classes)
        rows.append(row(f"supervised {args.fraction:.0%}", seg10, meta, data["test"]))
    if "loop" in wanted:
        loop_rows, sweep = run_loop(args, data, seg10, human, [train[i] for i in pool_idx], val)
        rows += loop_rows
    report = {"args": vars(args), "rows": rows, "inference": inference, "rule_sweep": sweep,
              "wall_seconds": time.perf_counter() - start}
    write_json(RESULTS / ("bench_segment_quick.json" if args.quick else "bench_segment.json"), report)
    print(markdown(rows, sweep, inference))


if __name__ == "__main__":
    main()
