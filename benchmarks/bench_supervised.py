"""Supervised head mode on cifar10_bench, per backbone: `fit()` with k labels per class vs a
scikit-learn logistic regression on the same cached (raw) features, and an oracle trained with the
unlabelled pool's true labels.

Run:  python benchmarks/bench_supervised.py [--data /work/shared/data/cifar10_bench] [--quick]
          [--cache-dir benchmarks/results/cache] [--seeds 0,1,2] [--ks 4,25] [--no-oracle]
          [--models tf_efficientnet_lite0,tf_efficientnet_lite1,tf_efficientnet_lite2] [--img-size N]
The input size is the product's automatic choice (classification.transforms.auto_size) unless
--img-size is given.
Features come from ONE persistent cache (--cache-dir), so extraction happens once across seeds and
rows; its wall time is reported apart from training. Writes benchmarks/results/bench_supervised.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from classification.cache import FeatureCache
from classification.config import DEFAULT_MODEL, TrainConfig, resolve_device
from classification.context import FitContext
from classification.data import ImageSet, load_labeled, load_unlabeled, stratified_split
from classification.engine import fit, sized
from classification.features import extract_features
from classification.inference import predict
from classification.models import create_classifier
from classification.transforms import data_config

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_bench"))
    p.add_argument("--cache-dir", default=str(RESULTS / "cache"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--ks", default="4,25", help="labels per class")
    p.add_argument("--no-oracle", action="store_true")
    p.add_argument("--quick", action="store_true", help="seed 0, 1,000 pool and 50/class test images")
    p.add_argument("--models", default=DEFAULT_MODEL)
    p.add_argument("--img-size", type=int, default=None, help="default: chosen from the model and the images")
    return p.parse_args()


def first_k(labels: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:k] for c in np.unique(labels)]))


def load_pool(root: Path, classes: list[str]) -> ImageSet:
    """The unlabelled pool with its true labels from unlabeled_truth.csv (matched by basename)."""
    pool = load_unlabeled(root / "unlabeled")
    truth = pd.read_csv(root / "unlabeled_truth.csv", dtype=str)
    index = {c: i for i, c in enumerate(classes)}
    by_name = dict(zip(truth["file"], truth["label"].map(index)))
    return pool.with_labels(np.array([by_name[Path(p).name] for p in pool.paths], np.int64), classes)


def load_sets(args) -> dict[str, ImageSet]:
    root = Path(args.data)
    labeled = load_labeled(root / "labeled")
    test = load_labeled(root / "test", classes=labeled.classes)
    pool = load_pool(root, labeled.classes) if not args.no_oracle else None
    if args.quick:
        test = test.subset(first_k(test.labels, 50))
        pool = pool.subset(np.arange(min(1000, len(pool)))) if pool is not None else None
    return {"labeled": labeled, "test": test, "pool": pool}


def warm_cache(cfg: TrainConfig, sets: dict, cache: FeatureCache) -> list[dict]:
    """Extract every feature the rows need (eval views, and the weak views head mode trains on),
    timed per set, so that the rows below time training alone."""
    model = create_classifier(cfg.model, len(sets["labeled"].classes), cfg.weights)
    data_cfg = data_config(model, cfg.img_size)
    ctx = FitContext(model, cfg, data_cfg, cache, resolve_device(cfg.device))
    train_pool = sets["labeled"] if sets["pool"] is None else sets["labeled"].concat(sets["pool"])
    jobs = [("labeled", sets["labeled"], "eval"), ("test", sets["test"], "eval")]
    if sets["pool"] is not None:
        jobs.append(("pool", sets["pool"], "eval"))
    if getattr(cfg, "augment_human", True):  # head mode trains on weak views of human labels
        jobs.append(("labeled+pool" if sets["pool"] is not None else "labeled", train_pool, "weak"))
    out = []
    for name, images, kind in jobs:
        hits0, misses0 = cache.hits, cache.misses
        start = time.perf_counter()
        extract_features(ctx, images, kind=kind, n_views=cfg.n_views)
        views = 1 if kind == "eval" else cfg.n_views
        out.append({"set": name, "kind": kind, "views": views, "images": len(images),
                    "seconds": time.perf_counter() - start, "cache_hits": cache.hits - hits0,
                    "cache_misses": cache.misses - misses0})
    return out


def test_accuracy(model, data_cfg, test: ImageSet, cache: FeatureCache) -> float:
    pred = predict(model, test, data_cfg, cache)
    return float((pred.probs.argmax(1)[pred.ok] == test.labels[pred.ok]).mean())


def run_fit(base: TrainConfig, images: ImageSet, seeds: list[int], cache: FeatureCache, test: ImageSet) -> dict:
    """Head-mode fit of `base` + test accuracy for each seed, splitting `images` per seed."""
    accs, secs = [], []
    for seed in seeds:
        cfg = base.with_(seed=seed)
        start = time.perf_counter()
        tr, va = stratified_split(images.labels, cfg.val_fraction, seed)
        res = fit(cfg, images.subset(tr), images.subset(va), cache)
        accs.append(test_accuracy(res.model, res.data_cfg, test, cache))
        secs.append(time.perf_counter() - start)
    return {"images": len(images), "acc": accs, "mean": float(np.mean(accs)),
            "std": float(np.std(accs)), "seconds": secs}


def run_logreg(base: TrainConfig, images: ImageSet, cache: FeatureCache, test: ImageSet) -> dict:
    model = create_classifier(base.model, len(images.classes))
    ctx = FitContext(model, base, data_config(model, base.img_size), cache)
    start = time.perf_counter()
    x_tr = extract_features(ctx, images, kind="eval").feats[0]
    x_te = extract_features(ctx, test, kind="eval").feats[0]
    clf = LogisticRegression(max_iter=2000).fit(x_tr, images.labels)
    acc = float((clf.predict(x_te) == test.labels).mean())
    return {"images": len(images), "acc": [acc], "mean": acc, "std": 0.0,
            "seconds": [time.perf_counter() - start]}


def run_rows(args, base: TrainConfig, sets: dict, cache: FeatureCache) -> list[dict]:
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    labeled, test, pool = sets["labeled"], sets["test"], sets["pool"]
    rows = []
    for k in map(int, args.ks.split(",")):
        sub = labeled.subset(first_k(labeled.labels, k))
        head = run_fit(base, sub, seeds, cache, test)
        lr = run_logreg(base, sub, cache, test)
        delta = 100 * (head["mean"] - lr["mean"])
        rows.append({"k": k, "method": "fit() head mode", "delta_vs_logreg": delta, **head})
        rows.append({"k": k, "method": "LogisticRegression(max_iter=2000), eval feats", **lr})
        if pool is not None:
            rows.append({"k": k, "method": "oracle: fit() on k/class + pool truth",
                         **run_fit(base, sub.concat(pool), seeds, cache, test)})
    return [{"model": base.model, "size": base.img_size, **r} for r in rows]


def print_table(extraction: list[dict], rows: list[dict]) -> None:
    print("| model | px | labels/class | method | images | test acc % (mean ± std) | Δ head − LogReg (pts) | wall s |")
    print("|---|---:|---:|---|---:|---|---:|---:|")
    for e in extraction:
        print(f"| {e['model']} | {e['size']} | — | feature extraction: {e['set']} ({e['kind']}, {e['views']} view(s)) | "
              f"{e['images']} | — | — | {e['seconds']:.1f} ({e['images'] / e['seconds']:.0f} img/s) |")
    for r in rows:
        seeds = f" ({len(r['acc'])} seeds)" if len(r["acc"]) > 1 else ""
        acc = f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}{seeds}"
        delta = f"{r['delta_vs_logreg']:+.1f}" if "delta_vs_logreg" in r else ""
        print(f"| {r['model']} | {r['size']} | {r['k']} | {r['method']} | {r['images']} | {acc} | {delta} | {sum(r['seconds']):.1f} |")


def code_state() -> dict:
    """The commit and the uncommitted files of `classification/`, which the numbers depend on."""
    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=RESULTS.parent.parent, capture_output=True,
                              text=True).stdout.rstrip()
    opt = TrainConfig().resolved_optimizer("head")
    return {"commit": git("rev-parse", "--short", "HEAD"), "head_optimizer": opt,
            "dirty": git("status", "--porcelain", "classification").splitlines()}


def main() -> int:
    args = parse_args()
    root = Path(args.data)
    if not (root / "labeled").is_dir():
        print(f"skipped: benchmark data not found at {root / 'labeled'}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    sets = load_sets(args)
    cache = FeatureCache(args.cache_dir)
    extraction, rows = [], []
    for name in args.models.split(","):
        base = sized(TrainConfig(model=name, img_size=args.img_size), sets["labeled"].paths)
        extraction += [{"model": name, "size": base.img_size, **e} for e in warm_cache(base, sets, cache)]
        rows += run_rows(args, base, sets, cache)
    print_table(extraction, rows)
    state = code_state()
    print(f"\ncode: {state['commit']}, head optimizer {state['head_optimizer']}, "
          f"uncommitted in classification/: {len(state['dirty'])} file(s)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"args": vars(args), "code": state, "loadavg_end": os.getloadavg(), "extraction": extraction,
           "rows": rows}
    (RESULTS / "bench_supervised.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
