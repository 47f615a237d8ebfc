"""Does the review certificate keep its promise? Simulated reviewers who know the truth.

For each dataset the loop runs once (a few trials; the run is kept and reused), then 200 seeded
uniform review samples of 100 of its accepted pseudo-labels are "reviewed" with the truth file and
certified exactly as `autolabel certify` does (autolabel.review.certify.certificate). The one-sided
Clopper-Pearson bound at 95 % promises that at most 5 % of such certificates claim more than the
true precision; the table reports that share, the exact probability for this n and true precision,
and how far below the truth the bound sits on average. Peers on the same samples: the normal
(Wald) approximation p_hat - 1.645 sqrt(p_hat (1 - p_hat) / n), and the model's own estimate of its
precision (the mean confidence of the accepted labels), which no sample checks.

    nice -n 10 python benchmarks/bench_certify.py [--data ../shared/data] [--datasets cifar10_bench,neu_cls]
        [--cache-dir /work/cache-rev] [--n-trials 3] [--img-size 128] [--samples 200] [--size 100]

Writes benchmarks/results/bench_certify.json (and keeps the runs in benchmarks/results/certify_runs/).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binom

from autolabel.review.bounds import lower_bound
from autolabel.review.certify import CertifyRequest, certificate
from autolabel.review.sample import draw, read_run_labels
from autolabel.review.verdicts import Verdict
from autolabel.run import start
from autolabel.settings import RunRequest

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
Z95 = 1.6448536269514722  # one-sided 95 % normal quantile


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--datasets", default="cifar10_bench,neu_cls")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default: $AUTOLABEL_CACHE or ~/.cache/autolabel)")
    p.add_argument("--n-trials", type=int, default=3)
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--samples", type=int, default=200, help="seeded review samples per dataset")
    p.add_argument("--size", type=int, default=100, help="labels per review sample")
    p.add_argument("--confidence", type=float, default=0.95)
    return p.parse_args()


def labelled_run(data: Path, out: Path, args) -> Path:
    """The loop's run on `data` (reused when a finished one is in `out`)."""
    state = out / "state.json"
    if state.is_file() and json.loads(state.read_text()).get("finished"):
        return out
    if out.exists():
        raise SystemExit(f"{out} holds an unfinished run: continue it with `autolabel --resume {out}` or remove it")
    req = RunRequest(data={"data_clean": data / "labeled", "data_raw": data / "unlabeled",
                           "truth": data / "unlabeled_truth.csv", "test": data / "test"},
                     train={"img_size": args.img_size}, loop={"n_trials": args.n_trials}, out=out,
                     cache_dir=args.cache_dir, tracking=None, echo=print)
    start(req)
    return out


def simulate(run: Path, truth_csv: Path, args) -> dict:
    """200 reviews by a reviewer who knows the truth, each certified; and the peers on the same samples."""
    labels = read_run_labels(run)
    truth = pd.read_csv(truth_csv, dtype=str)
    true_of = dict(zip(truth.file.map(lambda f: Path(f).name), truth.label))
    frame = labels.frame.assign(truth=[true_of[Path(p).name] for p in labels.frame.path])
    p_true = float((frame.label == frame.truth).mean())
    right = dict(zip(frame.path, frame.label == frame.truth))
    req = CertifyRequest(run, confidence=args.confidence)
    cp, wald, hats = [], [], []
    for seed in range(args.samples):
        sample = draw(labels, args.size, seed=seed)
        rows = [Verdict(i["path"], i["label"], "approve" if right[i["path"]] else "reject") for i in sample.items]
        cert = certificate(sample, rows, req)
        n, hat = cert["n"], cert["precision_hat"]
        cp.append(cert["precision_lower_bound"])
        wald.append(hat - Z95 * np.sqrt(hat * (1 - hat) / n))
        hats.append(hat)
    n = min(args.size, len(frame))
    errors = np.arange(n + 1)  # the exact chance, over every review outcome, that the bound claims too much
    over = np.array([lower_bound(n, e, args.confidence) > p_true for e in errors])
    exact = float(binom.pmf(errors, n, 1 - p_true)[over].sum())
    return {"population": len(frame), "true_precision": p_true, "n": n,
            "mean_confidence": float(frame.confidence.mean()), "mean_precision_hat": float(np.mean(hats)),
            "clopper_pearson": _score(np.array(cp), p_true) | {"exact_share_above_truth": exact},
            "wald": _score(np.array(wald), p_true)}


def _score(bound: np.ndarray, p_true: float) -> dict:
    return {"share_above_truth": float((bound > p_true).mean()), "mean_bound": float(bound.mean()),
            "mean_distance": float((p_true - bound).mean()), "std_bound": float(bound.std())}


def table(results: dict, args) -> str:
    lines = [f"| dataset | accepted labels | true precision | model's own estimate (mean confidence) | method "
             f"| bound > truth ({args.samples} samples of {args.size}) | exact P(bound > truth) | mean bound "
             "| mean truth − bound |", "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        for method, label in (("clopper_pearson", "Clopper–Pearson (autolabel certify)"), ("wald", "normal approximation (Wald)")):
            s = r[method]
            exact = f"{s['exact_share_above_truth']:.1%}" if "exact_share_above_truth" in s else ""
            lines.append(f"| {name} | {r['population']} | {r['true_precision']:.1%} | {r['mean_confidence']:.1%} | {label} "
                         f"| {s['share_above_truth']:.1%} | {exact} | {s['mean_bound']:.1%} | {s['mean_distance'] * 100:.1f} pt |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    results, runs = {}, RESULTS / "certify_runs"
    for name in args.datasets.split(","):
        data = args.data / name
        if not data.is_dir():
            raise SystemExit(f"no {data}: give --data, the folder holding {name}/")
        t0 = time.perf_counter()
        run = labelled_run(data, runs / name, args)
        t1 = time.perf_counter()
        results[name] = simulate(run, data / "unlabeled_truth.csv", args) | {"loop_seconds": round(t1 - t0, 1),
                                                                           "simulate_seconds": round(time.perf_counter() - t1, 1)}
        ok = results[name]["clopper_pearson"]["share_above_truth"] <= 1 - args.confidence
        print(f"{name}: share of bounds above the truth {results[name]['clopper_pearson']['share_above_truth']:.1%} "
              f"({'kept' if ok else 'BROKEN'}: the promise is <= {1 - args.confidence:.0%})", flush=True)
    print(table(results, args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_certify.json"
    out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
