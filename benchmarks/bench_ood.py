"""Out-of-class images in the pool: does the loop's guard keep them out of the labels?

cifar10_bench with 8 classes labelled and 2 held out. The held-out classes' pool images stay in the
pool as near out-of-class images, and ../shared/data/ood_mnist (500 digits) is added as far
out-of-class images. The loop runs twice on identical inputs, guard on and off:
    python benchmarks/bench_ood.py [--held-out bird,dog] [--labels 25] [--n-trials 10] [--k 5]
Reports AUROC and FPR@95%TPR of the guard's score (in-class pool images against near and far ones),
the share of each group refused, and pseudo-label precision (an out-of-class image given any label
counts as wrong). Writes benchmarks/results/bench_ood.json.
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
from embeddings.ood import auroc, fpr_at_tpr

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NEAR, FAR = -2, -3  # truth codes for held-out classes and digits


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED / "cifar10_bench")
    p.add_argument("--far", type=Path, default=SHARED / "ood_mnist")
    p.add_argument("--held-out", default="bird,dog")
    p.add_argument("--labels", type=int, default=25, help="human labels per class")
    p.add_argument("--n-trials", type=int, default=10)
    p.add_argument("--k", type=int, default=5, help="the guard's k")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    return p.parse_args()


def load(args):
    """8-class human labels and test set, the mixed pool, and the pool's truth (NEAR/FAR codes)."""
    held = args.held_out.split(",")
    full = load_labeled(args.data / "labeled")
    classes = [c for c in full.classes if c not in held]
    if len(classes) != len(full.classes) - len(held):
        raise SystemExit(f"--held-out {args.held_out}: not classes of {args.data}")
    remap = np.array([classes.index(c) if c in classes else -1 for c in full.classes])

    def keep(images, per_class=None):
        idx = np.flatnonzero(remap[images.labels] >= 0)
        if per_class:
            idx = np.concatenate([idx[images.labels[idx] == c][:per_class] for c in np.unique(images.labels[idx])])
        return images.subset(idx).with_labels(remap[images.labels[idx]], classes)

    cifar_pool, digits = load_unlabeled(args.data / "unlabeled"), load_unlabeled(args.far)
    truth10 = load_truth(args.data / "unlabeled_truth.csv", cifar_pool, full.classes)
    truth = np.r_[np.where(remap[truth10] >= 0, remap[truth10], NEAR), np.full(len(digits), FAR)]
    test = keep(load_labeled(args.data / "test", classes=full.classes))
    return keep(full, args.labels), cifar_pool.concat(digits), test, truth, classes


def run(args, lb, pool, test, truth, cache, guard: bool) -> tuple[dict, PseudoLabeler]:
    loop = LoopConfig(n_trials=args.n_trials, threshold=0.8, ood_guard=guard, ood_k=args.k)
    t0 = time.perf_counter()
    labeler = PseudoLabeler(loop, TrainConfig(img_size=args.img_size, seed=args.seed), cache).fit(lb, pool, test=test)
    acc = labeler.pseudo_labels_ >= 0
    right = acc & (labeler.pseudo_labels_ == truth)
    return {"test_accuracy": labeler.test_accuracy_, "accepted": int(acc.sum()),
            "precision": float(right.sum() / max(acc.sum(), 1)),
            "coverage_in_class": float((acc & (truth >= 0)).sum() / (truth >= 0).sum()),
            "accepted_near": int((acc & (truth == NEAR)).sum()), "accepted_far": int((acc & (truth == FAR)).sum()),
            "wall_s": time.perf_counter() - t0}, labeler


def guard_scores(labeler, truth) -> dict:
    s, refused = labeler.ood_score_, labeler.ood_refused_
    ins, near, far = truth >= 0, truth == NEAR, truth == FAR
    return {"threshold": labeler.ood_.threshold_, "k": labeler.ood_.k_,
            "auroc_near": auroc(s[ins], s[near]), "auroc_far": auroc(s[ins], s[far]),
            "fpr95_near": fpr_at_tpr(s[ins], s[near]), "fpr95_far": fpr_at_tpr(s[ins], s[far]),
            "refused_in": float(refused[ins].mean()), "refused_near": float(refused[near].mean()),
            "refused_far": float(refused[far].mean()),
            "counts": {"in": int(ins.sum()), "near": int(near.sum()), "far": int(far.sum())}}


def main() -> int:
    args = parse_args()
    if not (args.data / "labeled").is_dir() or not args.far.is_dir():
        print(f"skipped: benchmark data not found at {args.data} / {args.far}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.TemporaryDirectory(prefix="bench-ood-")
    cache = FeatureCache(args.cache_dir or tmp.name)
    lb, pool, test, truth, classes = load(args)
    on, labeler = run(args, lb, pool, test, truth, cache, guard=True)
    off, _ = run(args, lb, pool, test, truth, cache, guard=False)
    report = {"held_out": args.held_out, "classes": classes, "labels_per_class": args.labels,
              "guard": guard_scores(labeler, truth), "loop": {"guard_on": on, "guard_off": off}}
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_ood.json").write_text(json.dumps(report, indent=2))
    return 0


def print_report(r: dict) -> None:
    g = r["guard"]
    print(f"\n### Out-of-class guard: {len(r['classes'])} classes labelled ({r['labels_per_class']}/class), "
          f"held out {r['held_out']} (near, {g['counts']['near']}), MNIST digits (far, {g['counts']['far']}), "
          f"{g['counts']['in']} in-class pool images; k={g['k']}\n")
    print("| | AUROC | FPR@95%TPR | refused | target |")
    print("|---|---:|---:|---:|---|")
    print(f"| far (MNIST) | {g['auroc_far']:.3f} | {g['fpr95_far']:.3f} | {g['refused_far']:.1%} | refused >= 90 % |")
    print(f"| near ({r['held_out']}) | {g['auroc_near']:.3f} | {g['fpr95_near']:.3f} | {g['refused_near']:.1%} | refused >= 50 % |")
    print(f"| in-class | | | {g['refused_in']:.1%} | refused <= 5 % |")
    print("\n| loop | test accuracy | pseudo-label precision | in-class coverage | near accepted | far accepted | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, x in r["loop"].items():
        print(f"| {name.replace('_', ' ')} | {x['test_accuracy']:.1%} | {x['precision']:.1%} | {x['coverage_in_class']:.1%} | "
              f"{x['accepted_near']} | {x['accepted_far']} | {x['wall_s']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
