"""Index at scale: IVF-PQ over N x 64 synthetic vectors, built by streaming, against float32 flat.

    python benchmarks/bench_index.py --scale                       # N = 10,000,000 (2.6 GB on disk)
    python benchmarks/bench_index.py --scale --n 200000            # a quick check
    python benchmarks/bench_index.py --scale --tmp-dir /big/disk --sweep 16,32,64 --rerank 10

Data: the Gaussian mixture of bench_index.py at 64 dimensions (1,000 centres on the unit sphere;
sigma 0.177, so that the noise radius sigma*sqrt(64) ~ 1.41 is the typical distance between two
centres, as sigma 0.125 gives at 128 dimensions). N + 1,000 rows are generated 100,000 at a time
into a np.memmap in a temporary folder, so generation never holds the data in memory; the last
1,000 rows are the queries, searched as one batch.

Ground truth: exact brute force (faiss.knn) over the memmap, block by block ("float32 flat" row:
what a flat index costs, 4 * 64 bytes per vector).
Index: `EmbeddingIndex.build` with `type="ivfpq", pca=0` from a callable yielding memmap blocks:
OPQ, IVF and PQ train on a seeded sample, then the vectors are added block by block. Memory is the
index's faiss serialisation (PQ codes + ids in the inverted lists + coarse quantiser + OPQ and PQ
tables), against N * 64 * 4 bytes of float32.
Search: at each nprobe of --sweep, the k * --rerank shortlist is re-ranked by exact distance to
the float32 rows read from the memmap for the candidates only (the vectors stay on disk); QPS is
the best of 3, with --threads threads; without re-ranking for comparison.
Targets: memory <= 1/8 of float32 flat and 1-recall@10 >= 0.8 after re-ranking, at the smallest
nprobe of the sweep that reaches the recall. Writes benchmarks/results/bench_index_scale.json.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from index_common import CENTRES, N_QUERIES, RESULTS, K, best_time, fill_mixture

from classification.fileio import write_json
from embeddings.config import IndexConfig
from embeddings.exact import knn_blocks
from embeddings.index import EmbeddingIndex
from embeddings.recall import one_recall_at_k
from embeddings.stream import block_reader

DIM, TARGET_MEMORY, TARGET_RECALL = 64, 1 / 8, 0.8


def add_arguments(p) -> None:
    p.add_argument("--scale", action="store_true", help="run only the IVF-PQ scale case (see bench_index_scale.py)")
    p.add_argument("--n", type=int, default=10_000_000, help="scale: database size")
    p.add_argument("--scale-sigma", type=float, default=0.177, help="scale: per-dimension noise around each centre")
    p.add_argument("--nlist", type=int, default=0, help="scale: IVF lists; 0 = about 4 sqrt(N)")
    p.add_argument("--pq-m", type=int, default=0, help="scale: PQ code bytes per vector; 0 = d/8")
    p.add_argument("--rerank", type=int, default=10, help="scale: shortlist = k * rerank candidates")
    p.add_argument("--tmp-dir", type=Path, default=None, help="scale: where the memmap goes (default: system temp)")
    p.add_argument("--out", type=Path, default=RESULTS / "bench_index_scale.json", help="scale: result file")


def scale_case(args) -> dict:
    n, sweep = args.n, sorted({int(v) for v in args.sweep.split(",")} | ({args.nprobe} - {0}))
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="bench-index-scale-") as tmp:
        mm = np.lib.format.open_memmap(Path(tmp) / "x.npy", "w+", np.float32, (n + N_QUERIES, DIM))
        t0 = time.perf_counter()
        fill_mixture(mm, args.scale_sigma, args.seed)
        mm.flush()
        generate_s = time.perf_counter() - t0
        db, q = mm[:n], np.array(mm[n:])
        exact_s, (_, I_exact) = best_time(lambda: knn_blocks(q, block_reader(db)(), K), repeats=1)
        cfg = IndexConfig(type="ivfpq", pca=0, nlist=args.nlist, pq_m=args.pq_m, seed=args.seed)
        t0 = time.perf_counter()
        index = EmbeddingIndex.build(block_reader(db), pd.DataFrame(index=pd.RangeIndex(n)), cfg)
        build_s = time.perf_counter() - t0
        rows = [search_row(index, q, db, I_exact, nprobe, rerank) for nprobe in sweep for rerank in (args.rerank, 0)]
    good = [r for r in rows if r["rerank"] and r["one_recall@10"] >= TARGET_RECALL]
    chosen = good[0] if good else max((r for r in rows if r["rerank"]), key=lambda r: r["one_recall@10"])
    memory, flat = index.memory_bytes(), n * DIM * 4
    codes, ids = n * index.base.code_size, n * 8
    ok = memory <= TARGET_MEMORY * flat and chosen["one_recall@10"] >= TARGET_RECALL
    return {"n": n, "dim": DIM, "centres": CENTRES, "sigma": args.scale_sigma, "queries": N_QUERIES, "k": K,
            "threads": args.threads, "factory": index.manifest["factory"], "generate_s": generate_s,
            "build_s": build_s, "flat": {"bytes": flat, "qps": N_QUERIES / exact_s, "one_recall@10": 1.0},
            "memory": {"bytes": memory, "codes": codes, "ids": ids, "quantiser_and_tables": memory - codes - ids,
                       "vs_flat": memory / flat},
            "sweep": rows, "chosen": chosen,
            "target": {"status": "PASS" if ok else "FAIL", "memory_vs_flat": memory / flat,
                       "one_recall@10": chosen["one_recall@10"]}}


def search_row(index: EmbeddingIndex, q: np.ndarray, db: np.ndarray, I_exact: np.ndarray, nprobe: int,
               rerank: int) -> dict:
    index.tune(nprobe=nprobe)
    search_s, (_, I) = best_time(lambda: index.search(q, K, rerank=rerank, rerank_with=db))
    return {"nprobe": nprobe, "rerank": rerank, "qps": N_QUERIES / search_s, "one_recall@10": one_recall_at_k(I, I_exact, K)}


def print_scale(res: dict) -> None:
    mem, c = res["memory"], res["chosen"]
    print(f"\n### scale: {res['n']:,} x {res['dim']} synthetic ({res['centres']} centres, sigma {res['sigma']}), "
          f"{res['queries']} queries in one batch, {res['threads']} threads; {res['factory']}\n")
    print("| index | N | build s | memory MB | vs float32 flat | QPS | 1-recall@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| float32 flat (exact, blockwise) | {res['n']:,} | - | {res['flat']['bytes'] / 2**20:,.0f} | 1.000 | "
          f"{res['flat']['qps']:,.1f} | 1.000 |")
    print(f"| ivfpq (nprobe {c['nprobe']}, re-rank {c['rerank']}x) | {res['n']:,} | {res['build_s']:,.1f} | "
          f"{mem['bytes'] / 2**20:,.1f} | {mem['vs_flat']:.3f} | {c['qps']:,.0f} | {c['one_recall@10']:.3f} |")
    print(f"\nmemory: codes {mem['codes'] / 2**20:,.1f} MB + ids {mem['ids'] / 2**20:,.1f} MB + quantiser and tables "
          f"{mem['quantiser_and_tables'] / 2**20:,.1f} MB; data generated in {res['generate_s']:,.1f} s")
    print("sweep: " + ", ".join(f"nprobe {r['nprobe']} re-rank {r['rerank']}: {r['qps']:,.0f} QPS @ {r['one_recall@10']:.3f}"
                                for r in res["sweep"]))
    t = res["target"]
    print(f"\nTarget, memory <= 1/8 of float32 flat and 1-recall@10 >= {TARGET_RECALL}: {t['status']} "
          f"(memory {t['memory_vs_flat']:.3f} of flat, 1-recall@10 {t['one_recall@10']:.3f})")


def run_scale(args) -> dict:
    report = scale_case(args)
    print_scale(report)
    write_json(args.out, report)
    return report
