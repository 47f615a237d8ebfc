"""Out-of-class images in the pool: which score keeps them out, and does the loop's guard keep them
out of the labels?

cifar10_bench with 8 classes labelled (25 each) and 2 held out: the held-out classes' pool images
stay in the pool as near out-of-class images, and ../shared/data/ood_mnist (500 digits) is added as
far ones. For each held-out pair, in one run:
- every score on the same embeddings: today's kNN distance, the near score (Mahalanobis++) alone,
  the fused rule, and the fused rule with 10 "none of these classes" images (--data-other; drawn from
  the held-out classes' labelled folder, so none of them is in the pool): AUROC and FPR@95%TPR for
  near and far images, and the share of each group refused at the calibrated threshold;
- the loop, guard off and with each guard: pseudo-label precision (an out-of-class image given any
  label counts as wrong), in-class coverage, near and far images accepted, wall time.

    python benchmarks/bench_ood.py [--pairs bird,dog cat,truck] [--loop-pairs bird,dog] [--n-trials 3]

Writes benchmarks/results/bench_ood.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from autolabel.audit import load_truth
from autolabel.config import LoopConfig
from autolabel.loop import PseudoLabeler
from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.data import load_labeled, load_unlabeled
from classification.engine import sized
from embeddings.features import Embedder
from embeddings.fusion import fit_ood, percentile
from embeddings.ood import auroc, fpr_at_tpr

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NEAR, FAR = -2, -3  # truth codes for held-out classes and digits
GUARDS = {"guard off": {"ood_guard": False}, "knn (before)": {"ood_score": "knn"}, "fused": {},
          "fused + other": {}}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED / "cifar10_bench")
    p.add_argument("--far", type=Path, default=SHARED / "ood_mnist")
    p.add_argument("--pairs", nargs="+", default=["bird,dog", "cat,truck"], help="held-out class pairs")
    p.add_argument("--loop-pairs", nargs="*", default=["bird,dog"], help="pairs the loop runs on (slow)")
    p.add_argument("--labels", type=int, default=25, help="human labels per class")
    p.add_argument("--other", type=int, default=10, help="--data-other images (half from each held-out class)")
    p.add_argument("--n-trials", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    return p.parse_args()


def load(args, pair: str) -> dict:
    """8-class human labels and test set, the mixed pool, its truth (NEAR/FAR codes) and the
    "none of these" images, for one held-out pair."""
    held = pair.split(",")
    full = load_labeled(args.data / "labeled")
    classes = [c for c in full.classes if c not in held]
    if len(classes) != len(full.classes) - len(held):
        raise SystemExit(f"--pairs {pair}: not classes of {args.data}")
    remap = np.array([classes.index(c) if c in classes else -1 for c in full.classes])

    def keep(images, per_class=None):
        idx = np.flatnonzero(remap[images.labels] >= 0)
        if per_class:
            idx = np.concatenate([idx[images.labels[idx] == c][:per_class] for c in np.unique(images.labels[idx])])
        return images.subset(idx).with_labels(remap[images.labels[idx]], classes)

    rng = np.random.default_rng(args.seed)
    other = np.concatenate([rng.choice(np.flatnonzero(full.labels == full.classes.index(h)),
                                       args.other // len(held), replace=False) for h in held])
    cifar_pool, digits = load_unlabeled(args.data / "unlabeled"), load_unlabeled(args.far)
    truth10 = load_truth(args.data / "unlabeled_truth.csv", cifar_pool, full.classes)
    truth = np.r_[np.where(remap[truth10] >= 0, remap[truth10], NEAR), np.full(len(digits), FAR)]
    return {"labeled": keep(full, args.labels), "pool": cifar_pool.concat(digits), "truth": truth,
            "test": keep(load_labeled(args.data / "test", classes=full.classes)), "classes": classes,
            "other": full.subset(other)}


def separation(score: np.ndarray, refused: np.ndarray, truth: np.ndarray) -> dict:
    ins, near, far = truth >= 0, truth == NEAR, truth == FAR
    return {"auroc_near": auroc(score[ins], score[near]), "auroc_far": auroc(score[ins], score[far]),
            "fpr95_near": fpr_at_tpr(score[ins], score[near]), "fpr95_far": fpr_at_tpr(score[ins], score[far]),
            "refused_in": float(refused[ins].mean()), "refused_near": float(refused[near].mean()),
            "refused_far": float(refused[far].mean())}


def score_rows(d: dict, cache: FeatureCache, tpr: float = 0.95) -> dict:
    """Every score on the loop's own embeddings (the backbone and size the loop would use)."""
    cfg = sized(TrainConfig(), d["labeled"].paths + d["pool"].paths)
    embed = Embedder(cfg.model, img_size=cfg.img_size, cache=cache)
    ref, pool, other = (embed(d[k]).feats for k in ("labeled", "pool", "other"))
    labels, truth = d["labeled"].labels, d["truth"]
    knn = fit_ood(ref, labels, pool, tpr=tpr, near=False).score(pool)
    fused_model = fit_ood(ref, labels, pool, tpr=tpr)
    fused = fused_model.score(pool)
    near_cal = fused_model.near.calibration_
    near_refused = percentile(near_cal, fused["near"]) > np.quantile(percentile(near_cal, near_cal), tpr, method="higher")
    with_other = fit_ood(ref, labels, pool, other, tpr=tpr).score(pool)
    return {"knn (before)": separation(knn["knn"], knn["refused"], truth),
            "near (Mahalanobis++)": separation(fused["near"], near_refused, truth),
            "fused": separation(fused["score"], fused["refused"], truth),
            "fused + other": separation(with_other["score"], with_other["refused"], truth)}


def loop_row(name: str, d: dict, args, cache: FeatureCache) -> dict:
    loop = LoopConfig(n_trials=args.n_trials, threshold=0.8, **GUARDS[name])
    t0 = time.perf_counter()
    other = d["other"] if name == "fused + other" else None
    labeler = PseudoLabeler(loop, TrainConfig(seed=args.seed), cache).fit(d["labeled"], d["pool"], test=d["test"],
                                                                          other=other)
    truth, acc = d["truth"], labeler.pseudo_labels_ >= 0
    right = acc & (labeler.pseudo_labels_ == truth)
    return {"test_accuracy": labeler.test_accuracy_, "accepted": int(acc.sum()),
            "precision": float(right.sum() / max(acc.sum(), 1)),
            "coverage_in_class": float((acc & (truth >= 0)).sum() / (truth >= 0).sum()),
            "accepted_near": int((acc & (truth == NEAR)).sum()), "accepted_far": int((acc & (truth == FAR)).sum()),
            "wall_s": time.perf_counter() - t0}


def main() -> int:
    args = parse_args()
    if not (args.data / "labeled").is_dir() or not args.far.is_dir():
        print(f"skipped: benchmark data not found at {args.data} / {args.far}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.TemporaryDirectory(prefix="bench-ood-")
    cache = FeatureCache(args.cache_dir or tmp.name)
    report = {"labels_per_class": args.labels, "n_trials": args.n_trials, "n_other": args.other, "pairs": {}}
    for pair in args.pairs:
        d = load(args, pair)
        counts = {k: int(v) for k, v in zip(("in", "near", "far"), ((d["truth"] >= 0).sum(),
                                                                      (d["truth"] == NEAR).sum(), (d["truth"] == FAR).sum()))}
        entry = {"classes": d["classes"], "counts": counts, "scores": score_rows(d, cache)}
        if pair in args.loop_pairs:
            entry["loop"] = {name: loop_row(name, d, args, cache) for name in GUARDS}
        report["pairs"][pair] = entry
        print_pair(pair, entry, args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_ood.json").write_text(json.dumps(report, indent=2))
    return 0


def print_pair(pair: str, e: dict, args) -> None:
    c = e["counts"]
    print(f"\n### Held out {pair.replace(',', ', ')}: {len(e['classes'])} classes labelled ({args.labels}/class); "
          f"pool {c['in']} in-class, {c['near']} near, {c['far']} far (MNIST)\n")
    print("| score | near AUROC | near FPR@95 | far AUROC | far FPR@95 | in-class refused | near refused | far refused |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in e["scores"].items():
        print(f"| {name} | {s['auroc_near']:.3f} | {s['fpr95_near']:.3f} | {s['auroc_far']:.3f} | {s['fpr95_far']:.3f} | "
              f"{s['refused_in']:.1%} | {s['refused_near']:.1%} | {s['refused_far']:.1%} |")
    if "loop" not in e:
        return
    print(f"\n| loop ({args.n_trials} trials, --threshold 0.8) | test acc | precision | in-class coverage | "
          f"near accepted | far accepted | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, x in e["loop"].items():
        print(f"| {name} | {x['test_accuracy']:.1%} | {x['precision']:.1%} | {x['coverage_in_class']:.1%} | "
              f"{x['accepted_near']} of {c['near']} | {x['accepted_far']} of {c['far']} | {x['wall_s']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
