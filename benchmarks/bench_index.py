"""Nearest-neighbour search: FAISS flat / IVF / HNSW (through EmbeddingIndex) against scikit-learn brute force.

    python benchmarks/bench_index.py                        # real cifar10_bench + synthetic 100k and 1M
    python benchmarks/bench_index.py --sizes 100000 --cache-dir benchmarks/results/cache
    python benchmarks/bench_index.py --skip-real --nprobe 32 --threads 2
    python benchmarks/bench_index.py --scale --n 10000000    # IVF-PQ at scale: bench_index_scale.py

Every peer gets the same thread count: faiss through `set_threads`, scikit-learn through `n_jobs`
and `threadpool_limits` (its brute-force kNN runs on OpenMP and BLAS threads, not on n_jobs).

Real part: the 2,000 test images of cifar10_bench are indexed and the 250 labelled images are the
queries (efficientnet_lite0 eval features, PCA128 + L2norm as the product builds it). Label
recall@k for every peer; scikit-learn searches the same PCA-reduced unit vectors. 1-recall@10 of
IVF / HNSW is measured against exact search in that space.

Synthetic part: N x 128 float32 from a Gaussian mixture: 1,000 centres drawn uniformly on the unit
sphere, each point = centre + N(0, sigma^2 I) with sigma = 0.125 (noise radius sigma*sqrt(128) ~
1.41, the typical distance between two centres, so clusters touch), then L2-normalised. 1,000
held-out points from the same mixture are the queries, searched as one batch. The index is
`L2norm,<base>` (pca=0). Exact neighbours come from the flat index. Per peer: build time, QPS
(best of 3), 1-recall@10, bytes of the serialised index (scikit-learn: its fitted array), and
QPS relative to scikit-learn. IVF runs at --nprobe (default: the smallest of --sweep reaching
1-recall@10 >= 0.95); the whole sweep is printed too. Target: at 1M, IVF >= 10x scikit-learn's QPS
at 1-recall@10 >= 0.95. Writes benchmarks/results/bench_index.json.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from bench_index_scale import add_arguments, run_scale
from index_common import K, N_QUERIES, RESULTS, best_time, fill_mixture
from sklearn.neighbors import NearestNeighbors

from classification.cache import FeatureCache
from classification.data import load_labeled
from classification.fileio import write_json
from embeddings.api import exact_search, metadata
from embeddings.config import IndexConfig
from embeddings.features import Embedder
from embeddings.index import EmbeddingIndex, set_threads
from embeddings.recall import one_recall_at_k, recall_at_k

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_bench"
DIM, TARGET_RATIO, TARGET_RECALL = 128, 10.0, 0.95


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100000,1000000", help="synthetic database sizes")
    p.add_argument("--threads", type=int, default=2, help="threads for every peer")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache; default: in memory")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--nprobe", type=int, default=0, help="IVF nprobe; 0 = smallest sweep value with recall >= 0.95")
    p.add_argument("--sweep", default="8,16,32,64,128", help="IVF nprobe values to report")
    p.add_argument("--ef-search", type=int, default=64, help="HNSW efSearch")
    p.add_argument("--sigma", type=float, default=0.125, help="per-dimension noise around each centre")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    add_arguments(p)
    return p.parse_args()


def thread_limit(n: int):
    """Caps every loaded OpenMP and BLAS pool (scikit-learn's, numpy's, faiss's own OpenBLAS) for the
    whole run, so no peer gets more threads than another; a no-op where threadpoolctl is missing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n)


def sklearn_brute(x: np.ndarray, threads: int):
    return NearestNeighbors(n_neighbors=K, algorithm="brute", metric="euclidean", n_jobs=threads).fit(x)


def build(x: np.ndarray, cfg: IndexConfig) -> tuple[EmbeddingIndex, float]:
    meta = pd.DataFrame({"path": np.zeros(len(x), dtype=object)})  # ids only; paths are irrelevant here
    t0 = time.perf_counter()
    index = EmbeddingIndex.build(x, meta, cfg)
    return index, time.perf_counter() - t0


# ---------------------------------------------------------------- real embeddings

def real_part(args) -> dict | None:
    if not (args.data / "labeled").is_dir() or not (args.data / "test").is_dir():
        print(f"real part skipped: benchmark data not found at {args.data}")
        return None
    labeled = load_labeled(args.data / "labeled")
    test = load_labeled(args.data / "test", classes=labeled.classes)
    embed = Embedder(img_size=args.img_size, cache=FeatureCache(args.cache_dir))
    db, q = embed(test), embed(labeled)
    names = np.asarray(labeled.classes, dtype=object)
    x_db, y_db = db.feats[db.ok], names[test.labels[db.ok]]
    x_q, y_q = q.feats[q.ok], names[labeled.labels[q.ok]]
    ks, rows = (1, 3, 5, 10), {}
    for kind in ("flat", "ivf", "hnsw"):
        cfg = IndexConfig(type=kind, nprobe=args.nprobe or 16, ef_search=args.ef_search)
        index = EmbeddingIndex.build(x_db, metadata(test, db.ok), cfg)
        _, I = index.search(x_q, K)
        rows[kind] = {"space": index.manifest["factory"], "recall": {k: recall_at_k(I, y_q, y_db, k) for k in ks},
                      "one_recall@10": one_recall_at_k(I, exact_search(index, x_q, K)[1], K)}
        if kind == "flat":  # sklearn searches the same PCA space and is scored against the same exact search
            z_db, z_q, I_exact = index.transform(x_db), index.transform(x_q), I
    I = sklearn_brute(z_db, args.threads).kneighbors(z_q, K, return_distance=False)
    rows["sklearn_brute"] = {"space": "PCA128,L2norm (flat index's transform)",
                             "recall": {k: recall_at_k(I, y_q, y_db, k) for k in ks},
                             "one_recall@10": one_recall_at_k(I, I_exact, K)}
    return {"database": len(x_db), "queries": len(x_q), "img_size": args.img_size, "rows": rows}


# ---------------------------------------------------------------- synthetic vectors

def mixture(n: int, sigma: float, seed: int) -> np.ndarray:
    """n unit vectors from the Gaussian mixture in the docstring, built in chunks to bound memory."""
    return fill_mixture(np.empty((n, DIM), np.float32), sigma, seed)


def faiss_row(index: EmbeddingIndex, build_s: float, q: np.ndarray, I_exact: np.ndarray | None) -> dict:
    search_s, (_, I) = best_time(lambda: index.search(q, K))
    return {"build_s": build_s, "qps": len(q) / search_s, "bytes": int(faiss.serialize_index(index.index).size),
            "one_recall@10": one_recall_at_k(I, I_exact if I_exact is not None else I, K), "I": I}


def ivf_sweep(index: EmbeddingIndex, q: np.ndarray, I_exact: np.ndarray, values: list[int]) -> list[dict]:
    out = []
    for nprobe in values:
        index.tune(nprobe=nprobe)
        search_s, (_, I) = best_time(lambda: index.search(q, K))
        out.append({"nprobe": nprobe, "qps": len(q) / search_s, "one_recall@10": one_recall_at_k(I, I_exact, K)})
    return out


def synthetic_size(n: int, args) -> dict:
    x = mixture(n + N_QUERIES, args.sigma, args.seed)
    db, q = x[:n], x[n:]
    rows = {}
    flat, t = build(db, IndexConfig(type="flat", pca=0))
    rows["flat"] = faiss_row(flat, t, q, None)
    I_exact = rows["flat"]["I"]
    del flat
    ivf, t = build(db, IndexConfig(type="ivf", pca=0))
    sweep = ivf_sweep(ivf, q, I_exact, sorted({int(v) for v in args.sweep.split(",")} | ({args.nprobe} - {0})))
    good = [r["nprobe"] for r in sweep if r["one_recall@10"] >= TARGET_RECALL]
    nprobe = args.nprobe or (good[0] if good else sweep[-1]["nprobe"])
    ivf.tune(nprobe=nprobe)
    rows[f"ivf (nlist {ivf.base.nlist}, nprobe {nprobe})"] = faiss_row(ivf, t, q, I_exact)
    del ivf
    hnsw, t = build(db, IndexConfig(type="hnsw", pca=0, ef_search=args.ef_search))
    rows[f"hnsw (M 32, ef {args.ef_search})"] = faiss_row(hnsw, t, q, I_exact)
    del hnsw
    t0 = time.perf_counter()
    nn = sklearn_brute(db, args.threads)
    fit_s = time.perf_counter() - t0
    search_s, I = best_time(lambda: nn.kneighbors(q, K, return_distance=False))
    rows["sklearn_brute"] = {"build_s": fit_s, "qps": len(q) / search_s, "bytes": int(nn._fit_X.nbytes),
                             "one_recall@10": one_recall_at_k(I, I_exact, K)}
    for row in rows.values():
        row.pop("I", None)
        row["x_sklearn"] = row["qps"] / rows["sklearn_brute"]["qps"]
    return {"n": n, "nprobe": nprobe, "sweep": sweep, "rows": rows}


def target(synth: dict) -> dict:
    """The 1M goal: the chosen IVF point must be both >= 10x sklearn's QPS and >= 0.95 1-recall@10."""
    big = synth.get("1000000")
    if big is None:
        return {"status": "not run (1000000 not in --sizes)"}
    ivf = next(r for name, r in big["rows"].items() if name.startswith("ivf"))
    ok = ivf["x_sklearn"] >= TARGET_RATIO and ivf["one_recall@10"] >= TARGET_RECALL
    return {"status": "PASS" if ok else "FAIL", "x_sklearn": ivf["x_sklearn"], "one_recall@10": ivf["one_recall@10"]}


# ---------------------------------------------------------------- report

def print_real(real: dict) -> None:
    print(f"\n### cifar10_bench: {real['queries']} labelled queries against {real['database']} test images, "
          f"{real['img_size']} px\n")
    print("| peer | search space | recall@1 | recall@3 | recall@5 | recall@10 | 1-recall@10 vs exact |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, r in real["rows"].items():
        rec = " | ".join(f"{r['recall'][k]:.3f}" for k in (1, 3, 5, 10))
        print(f"| {name} | {r['space']} | {rec} | {r['one_recall@10']:.3f} |")


def print_synthetic(res: dict, threads: int) -> None:
    print(f"\n### synthetic {res['n']:,} x {DIM}, {N_QUERIES} queries in one batch, {threads} threads\n")
    print("| peer | build s | QPS | x sklearn | 1-recall@10 | index MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in res["rows"].items():
        print(f"| {name} | {r['build_s']:.2f} | {r['qps']:,.0f} | {r['x_sklearn']:.1f} | "
              f"{r['one_recall@10']:.3f} | {r['bytes'] / 2**20:.0f} |")
    print("\nIVF sweep: " + ", ".join(f"nprobe {s['nprobe']}: {s['qps']:,.0f} QPS @ {s['one_recall@10']:.3f}"
                                      for s in res["sweep"]))


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    set_threads(args.threads)
    if args.scale:
        with thread_limit(args.threads):
            run_scale(args)
        return 0
    with thread_limit(args.threads):
        report = run(args)
    write_json(RESULTS / "bench_index.json", report)
    return 0


def run(args) -> dict:
    report = {"threads": args.threads, "k": K, "sigma": args.sigma, "seed": args.seed}
    if not args.skip_real:
        report["real"] = real_part(args)
        if report["real"]:
            print_real(report["real"])
    if not args.skip_synthetic:
        report["synthetic"] = {}
        for n in (int(s) for s in args.sizes.split(",")):
            report["synthetic"][str(n)] = res = synthetic_size(n, args)
            print_synthetic(res, args.threads)
        report["target"] = target(report["synthetic"])
        t = report["target"]
        detail = f" (IVF {t['x_sklearn']:.1f}x sklearn at 1-recall@10 {t['one_recall@10']:.3f})" if "x_sklearn" in t else ""
        print(f"\nTarget at 1M, IVF >= {TARGET_RATIO:.0f}x sklearn QPS at 1-recall@10 >= {TARGET_RECALL}: "
              f"{t['status']}{detail}")
    return report


if __name__ == "__main__":
    sys.exit(main())
