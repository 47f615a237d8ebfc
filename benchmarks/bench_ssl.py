"""Semi-supervised labelling, every peer on identical frozen features, one table per setting.

    python benchmarks/bench_ssl.py [--settings cifar10_bench:4,cifar10_bench:25,neu_cls:5]
                                   [--seeds 0,1,2] [--rows ...] [--data-root ../shared/data]

Each seed draws its own human labels (benchmarks/ssl_data.py). Rows: supervised only,
scikit-learn SelfTrainingClassifier(LogisticRegression, 0.8) and LabelSpreading(kNN) on the
raw features our head starts from, our loop's rows in `ROWS` (today's fixed and flexmatch at 0.8 on
uncalibrated probabilities, growth, `default` (the loop's defaults), `target90`
(--target-precision 0.9)) and the oracle (the pool labelled with its truth).
Columns: test accuracy, precision and coverage of the accepted labels, the loop's own estimate of
their precision, wall time. Writes benchmarks/results/bench_ssl.json and, per setting, a
precision-coverage curve PNG (seed 0: accepted labels ranked by confidence, ours against the peers').
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

from autolabel.audit import audit
from autolabel.config import LoopConfig
from autolabel.loop import PseudoLabeler
from classification.cache import FeatureCache
from classification.config import TrainConfig
from ssl_data import Draw, draw, load, run_peer, shared_features

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
PEERS = ("selftraining", "labelspreading")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--settings", default="cifar10_bench:4,cifar10_bench:25,neu_cls:5", help="dataset:labels per class")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n-trials", type=int, default=10)
    p.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    p.add_argument("--rows", default="supervised,selftraining,labelspreading,fixed,flexmatch,default,target90,oracle")
    return p.parse_args()


ROWS = {  # row name -> the loop's settings (beyond n_trials); today's rules as they ran before calibration
    "fixed": {"policy": "fixed", "threshold": 0.8, "calibration": "none"},
    "flexmatch": {"policy": "flexmatch", "threshold": 0.8, "calibration": "none"},
    "growth": {"policy": "growth"},
    "default": {},
    "target90": {"target_precision": 0.9},
}


def run_ours(name: str, d: Draw, cache: FeatureCache, seed: int, n_trials: int) -> dict:
    """Our loop as row `name` asks: supervised (no trial), oracle, or one of `ROWS`."""
    train, lb, pool = TrainConfig(seed=seed), d.labeled, d.pool
    if name in ("supervised", "oracle"):
        loop = LoopConfig(n_trials=0)
        if name == "oracle":
            known = np.flatnonzero(d.truth >= 0)
            lb, pool = lb.concat(pool.subset(known).with_labels(d.truth[known], lb.classes)), pool.subset([])
    else:
        loop = LoopConfig(n_trials=n_trials, **ROWS[name])
    labeler = PseudoLabeler(loop, train, cache).fit(lb, pool, test=d.test)
    estimate = labeler.state_.estimated_precision()[0] if len(pool) else None
    return {"pseudo": labeler.pseudo_labels_, "confidence": labeler.confidence_,
            "test_accuracy": labeler.test_accuracy_, "estimated_precision": estimate}


def score(run: dict, d: Draw) -> dict:
    """The numbers of one run (pseudo-labels audited against the truth); arrays dropped."""
    if "test_pred" in run:
        run["test_accuracy"] = float((run["test_pred"] == d.test.labels).mean())
    scored = audit(run["pseudo"], d.truth, d.labeled.classes) if len(run["pseudo"]) else {}
    return {"test_accuracy": run["test_accuracy"], "precision": scored.get("precision"),
            "coverage": scored.get("coverage"), "estimated_precision": run.get("estimated_precision")}


def curve(run: dict, truth: np.ndarray) -> list[tuple[float, float]]:
    """(coverage, precision) of the accepted labels taken in order of confidence, 50 points."""
    acc = np.flatnonzero((run["pseudo"] >= 0) & (truth >= 0))
    if not len(acc):
        return []
    order = acc[np.argsort(-run["confidence"][acc], kind="stable")]
    right = np.cumsum(run["pseudo"][order] == truth[order])
    n = np.unique(np.linspace(1, len(order), 50).astype(int))
    return [(float(i / (truth >= 0).sum()), float(right[i - 1] / i)) for i in n]


def run_setting(root: Path, k: int, args, cache: FeatureCache) -> dict:
    rows, curves, full = {}, {}, load(root)
    for seed in [int(s) for s in args.seeds.split(",")]:
        d = draw(full, k, seed)
        feats = shared_features(d, cache) if any(r in PEERS for r in args.rows.split(",")) else None
        for name in args.rows.split(","):
            t0 = time.perf_counter()
            run = run_peer(name, d, feats, seed) if name in PEERS else run_ours(name, d, cache, seed, args.n_trials)
            row = rows.setdefault(name, {"runs": [], "wall_s": []})
            row["runs"].append(score(run, d))
            row["wall_s"].append(time.perf_counter() - t0)
            if seed == int(args.seeds.split(",")[0]) and name not in ("supervised", "oracle"):
                curves[name] = curve(run, d.truth)
            print(f"{root.name}:{k} seed {seed} {name}: {row['runs'][-1]}", file=sys.stderr, flush=True)
    return {"rows": rows, "curves": curves}


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.TemporaryDirectory(prefix="bench-ssl-")
    cache = FeatureCache(args.cache_dir or tmp.name)
    report = {"seeds": args.seeds, "n_trials": args.n_trials, "settings": {}}
    for setting in args.settings.split(","):
        name, k = setting.split(":")
        root = args.data_root / name
        if not (root / "labeled").is_dir():
            print(f"skipped {setting}: benchmark data not found at {root}")
            continue
        report["settings"][setting] = run_setting(root, int(k), args, cache)
        print_table(setting, report["settings"][setting]["rows"])
        plot_curves(setting, report["settings"][setting]["curves"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_ssl.json").write_text(json.dumps(report, indent=2))
    return 0


def _ms(values) -> str:
    values = [v for v in values if v is not None and v == v]
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}" if values else "–"


def print_table(setting: str, rows: dict) -> None:
    print(f"\n### {setting} (mean ± std over seeds)\n")
    print("| method | test accuracy % | precision % | coverage % | estimated precision % | wall s / seed |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        r = row["runs"]
        cols = [_ms([x[c] for x in r]) for c in ("test_accuracy", "precision", "coverage", "estimated_precision")]
        print(f"| {name} | {' | '.join(cols)} | {np.mean(row['wall_s']):.0f} |", flush=True)


def plot_curves(setting: str, curves: dict, folder: Path = RESULTS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, points in curves.items():
        if points:
            ax.plot(*zip(*points), label=name, lw=2.5 if name == "default" else 1.2)
    low = min((p for points in curves.values() for _, p in points), default=0.0)
    ax.set(xlabel="coverage of the pool", ylabel="precision of the accepted labels", title=setting,
           xlim=(0, 1), ylim=(max(0.0, low - 0.02), 1.002))  # zoomed: the curves differ near the top
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / f"precision_coverage_{setting.replace(':', '_')}.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
