"""Semi-supervised labelling on cifar10_bench, every peer on identical frozen features, one table.

Run one setting per command (the first k files of each class are the human labels):
    python benchmarks/bench_ssl.py --labels 4  [--seeds 0,1,2] [--data ../shared/data/cifar10_bench]
    python benchmarks/bench_ssl.py --labels 25
Rows: supervised-only, scikit-learn SelfTrainingClassifier(LogisticRegression, threshold=0.8),
scikit-learn LabelSpreading(kernel="knn"), autolabel fixed 0.8, autolabel flexmatch, and the oracle
(pool labelled with its truth). Writes benchmarks/results/bench_ssl_<k>.json.
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
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

from autolabel.audit import audit, load_truth
from autolabel.config import LoopConfig
from autolabel.loop import PseudoLabeler
from classification.cache import FeatureCache
from classification.config import DEFAULT_MODEL, TrainConfig
from classification.context import FitContext
from classification.data import ImageSet, load_labeled, load_unlabeled
from classification.features import extract_features
from classification.models import create_classifier
from classification.transforms import data_config

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_bench"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--labels", type=int, default=4, help="human labels per class")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n-trials", type=int, default=10)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    p.add_argument("--rows", default="supervised,selftraining,labelspreading,fixed,flexmatch,oracle",
                   help="also: flexmatch_tail (trains the last block on cached maps, --tail-blocks), "
                        "flexmatch_views (predicts the pool with the mean of 4 weak views)")
    p.add_argument("--tail-blocks", type=int, default=1)
    p.add_argument("--tail-epochs", type=int, default=3)
    return p.parse_args()


def load(data: Path, k: int):
    labeled = load_labeled(data / "labeled")
    idx = np.concatenate([np.flatnonzero(labeled.labels == c)[:k] for c in range(len(labeled.classes))])
    pool, test = load_unlabeled(data / "unlabeled"), load_labeled(data / "test", classes=labeled.classes)
    truth = load_truth(data / "unlabeled_truth.csv", pool, labeled.classes)
    return labeled.subset(idx), pool, test, truth


def eval_features(images: ImageSet, size: int, cache: FeatureCache) -> np.ndarray:
    model = create_classifier(DEFAULT_MODEL, 2)
    return extract_features(FitContext(model, TrainConfig(), data_config(model, size), cache), images).feats[0]


def run_ours(name, sets, cache, seed, args):
    """One row of ours on sets = (labelled, pool, test, pool truth), with the run's `args`
    (img_size, n_trials, tail_blocks, tail_epochs)."""
    (lb, pool, test, truth), n_trials = sets, args.n_trials
    loop = {"supervised": LoopConfig(n_trials=0), "fixed": LoopConfig(n_trials=n_trials, threshold=0.8, policy="fixed"),
            "flexmatch": LoopConfig(n_trials=n_trials, threshold=0.8, policy="flexmatch"),
            "flexmatch_tail": LoopConfig(n_trials=n_trials, threshold=0.8, policy="flexmatch"),
            "flexmatch_views": LoopConfig(n_trials=n_trials, threshold=0.8, policy="flexmatch", weak_views=4)}
    train = TrainConfig(img_size=args.img_size, seed=seed)
    if name == "flexmatch_tail":
        train = train.with_(tail_blocks=args.tail_blocks, tail_epochs=args.tail_epochs)
    if name == "oracle":
        full = pool.subset(np.flatnonzero(truth >= 0)).with_labels(truth[truth >= 0], lb.classes)
        lb, pool, loop_cfg = lb.concat(full), pool.subset([]), LoopConfig(n_trials=0)
    else:
        loop_cfg = loop[name]
    labeler = PseudoLabeler(loop_cfg, train, cache).fit(lb, pool, test=test)
    scored = audit(labeler.pseudo_labels_, truth, lb.classes) if name != "oracle" else {}
    return {"test_accuracy": labeler.test_accuracy_, "precision": scored.get("precision"),
            "coverage": scored.get("coverage"), "trials": labeler.n_trials_, "stop": labeler.termination_reason_}


def run_sklearn(name, x_lb, y_lb, x_pool, x_test, y_test, truth, seed):
    x = np.vstack([x_lb, x_pool])
    y = np.r_[y_lb, np.full(len(x_pool), -1)]
    if name == "selftraining":
        est = SelfTrainingClassifier(LogisticRegression(max_iter=2000, random_state=seed), threshold=0.8).fit(x, y)
        pseudo = np.where(est.labeled_iter_[len(y_lb):] > 0, est.transduction_[len(y_lb):], -1)
    else:
        est = LabelSpreading(kernel="knn", n_neighbors=7).fit(x, y)
        pseudo = est.transduction_[len(y_lb):]
    scored = audit(pseudo, truth, [str(i) for i in range(int(y_lb.max()) + 1)])
    return {"test_accuracy": float((est.predict(x_test) == y_test).mean()), "precision": scored["precision"],
            "coverage": scored["coverage"]}


def main() -> int:
    args = parse_args()
    if not (args.data / "labeled").is_dir():
        print(f"skipped: benchmark data not found at {args.data}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.TemporaryDirectory(prefix="bench-ssl-")
    cache = FeatureCache(args.cache_dir or tmp.name)
    lb, pool, test, truth = load(args.data, args.labels)
    start = time.perf_counter()
    feats = {n: eval_features(s, args.img_size, cache) for n, s in (("lb", lb), ("pool", pool), ("test", test))}
    extract_s = time.perf_counter() - start
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {}
    for name in args.rows.split(","):
        runs, t0 = [], time.perf_counter()
        for seed in seeds:
            if name in ("selftraining", "labelspreading"):
                runs.append(run_sklearn(name, feats["lb"], lb.labels, feats["pool"], feats["test"], test.labels, truth, seed))
            else:
                runs.append(run_ours(name, (lb, pool, test, truth), cache, seed, args))
        rows[name] = {"runs": runs, "wall_s": (time.perf_counter() - t0) / len(seeds)}
        print(f"done {name}: {[round(r['test_accuracy'], 4) for r in runs]}", file=sys.stderr, flush=True)
    n_images = len(lb) + len(pool) + len(test)
    report = {"labels_per_class": args.labels, "seeds": seeds, "img_size": args.img_size,
              "eval_feature_extraction_s": extract_s, "rows": rows,
              "backbone_passes_per_image": cache.stored / n_images, "views": TrainConfig().n_views}
    print_table(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"bench_ssl_{args.labels}.json").write_text(json.dumps(report, indent=2))
    return 0


def _ms(values) -> str:
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "–"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def print_table(report: dict) -> None:
    print(f"\n### {report['labels_per_class']} labels/class, {report['img_size']} px, seeds {report['seeds']}\n")
    print("| method | test accuracy % | pseudo-label precision % | coverage % | wall s / seed |")
    print("|---|---:|---:|---:|---:|")
    for name, row in report["rows"].items():
        r = row["runs"]
        print(f"| {name} | {_ms([x['test_accuracy'] for x in r])} | {_ms([x['precision'] for x in r])} | "
              f"{_ms([x['coverage'] for x in r])} | {row['wall_s']:.0f} |")
    print(f"\nEval-view feature extraction (shared by every row): {report['eval_feature_extraction_s']:.0f} s. "
          f"Backbone passes per image over the whole run: {report['backbone_passes_per_image']:.2f} "
          f"(bound: 1 + V = {1 + report['views']}).")


if __name__ == "__main__":
    sys.exit(main())
