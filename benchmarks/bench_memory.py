"""Peak memory of `autolabel` labelling a large generated pool: does it grow with the pool only by
the features it keeps?

Memory is measured, not speed: each size runs the real command (head mode, `--n-trials 1`, a cold
feature cache, the default guards) in a fresh process, on small generated JPEGs (32x32 noise around
a per-class colour; generating them is setup and is not measured). Two numbers per size:
  - peak RSS of the largest process, from `getrusage(RUSAGE_CHILDREN).ru_maxrss` of a wrapper
    process that runs only that command (exact, and per size, since each wrapper is new);
  - peak PSS of the whole process tree (the command and its decoding workers), polled from
    /proc/<pid>/smaps_rollup every 0.2 s (shared pages split between processes, so the sum is fair).

What the pool costs by design: decoding and the backbone stream over batches (DataLoader ->
ONNX Runtime, cache shards flushed every 1,024 rows); prediction and the out-of-class guard take
the pool 4,096 images at a time; the disk cache keeps only its key index in memory; and the final
fit's 1 + n_views views per image live in a float16 file (`classification.train.views.ViewStore`) that
full-batch L-BFGS reads back one 64 MB block at a time. What still grows with the pool: per-image
bookkeeping (paths, hashes, labels, confidences, the cache's key index) and its probabilities.
(Time, 1 thread: 10k in ~4 min; 100k in ~30 min, half of it extraction, half the final L-BFGS fit.)

Target (largest vs smallest size): peak <= 1.5x the smallest size's peak, and <= 4 GB.

Run:  python benchmarks/bench_memory.py --sizes 10000,100000      (the full run; Linux, needs /proc)
      python benchmarks/bench_memory.py --sizes 2000,4000         (a quick check)
On a busy machine, OMP_NUM_THREADS=1 spares the runs torch's thread contention (it changes their
speed, not the memory that is measured).
Writes benchmarks/results/bench_memory.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES, LABELS_PER_CLASS, SIDE = 10, 5, 32
RATIO_MAX, PEAK_MAX_MB = 1.5, 4096
# Runs one command and reports the largest RSS among its processes (KB on Linux).
WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000", help="pool sizes, comma-separated")
    p.add_argument("--img-size", type=int, default=64,
                   help="model input size; small keeps 100k feasible on 2 cores (memory, not speed, is measured)")
    p.add_argument("--workdir", default=None, help="where the images go (default: a temp folder, removed after)")
    p.add_argument("--keep", action="store_true", help="keep --workdir's images for the next run")
    return p.parse_args()


def write_images(folder: Path, n: int, seed: int, colour_of=None) -> list[Path]:
    """n small JPEGs (1,000 per subfolder): per-class colour plus noise, so a head has something to
    learn. Image i depends only on (seed, i), so a kept --workdir is reused as it is."""
    colours = np.random.default_rng(0).integers(0, 256, (CLASSES, 3))
    paths = []
    for i in range(n):
        path = folder / f"{i // 1000:04d}" / f"img{i:07d}.jpg"
        if not path.is_file():
            rng = np.random.default_rng([seed, i])
            c = colours[colour_of(i) if colour_of else rng.integers(CLASSES)]
            noise = rng.normal(0, 40, (SIDE, SIDE, 3))
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(c + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def write_labeled(work: Path) -> None:
    """Human labels: a folder per class."""
    for c in range(CLASSES):
        write_images(work / "labeled" / f"class{c}", LABELS_PER_CLASS, seed=c, colour_of=lambda i, c=c: c)


def pool_csv(work: Path, n: int) -> Path:
    paths = write_images(work / "pool", n, seed=12345)
    csv = work / f"pool_{n}.csv"
    csv.write_text("path\n" + "".join(f"{p}\n" for p in paths))
    return csv


def command(work: Path, pool: Path, cache: Path, out: Path, img_size: int) -> list[str]:
    return [sys.executable, "-c", "from autolabel.cli import main; import sys; sys.exit(main(sys.argv[1:]))",
            "--data-clean", str(work / "labeled"), "--data-raw", str(pool), "--n-trials", "1",
            "--mode", "head", "--img-size", str(img_size), "--no-mlflow", "--quiet",
            "--cache-dir", str(cache), "--out", str(out)]


def tree_pss_kb(root: int) -> int:
    """PSS (else RSS) summed over `root` and its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            key = "Pss:"
        except OSError:
            try:
                text, key = Path(f"/proc/{pid}/status").read_text(), "VmRSS:"
            except OSError:
                continue
        total += next((int(line.split()[1]) for line in text.splitlines() if line.startswith(key)), 0)
    return total


def measure(cmd: list[str]) -> dict:
    """Run `cmd` under a fresh wrapper process; poll its tree's PSS until it ends."""
    start, peak_pss = time.monotonic(), 0
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *cmd], stdout=subprocess.PIPE, text=True)
    while proc.poll() is None:
        peak_pss = max(peak_pss, tree_pss_kb(proc.pid))
        time.sleep(0.2)
    maxrss_kb, rc = proc.stdout.read().split()[-2:]
    return {"peak_rss_mb": int(maxrss_kb) / 1024, "peak_tree_pss_mb": peak_pss / 1024,
            "peak_mb": max(int(maxrss_kb), peak_pss) / 1024, "exit_code": int(rc),
            "seconds": time.monotonic() - start}


def warm_onnx(work: Path, img_size: int) -> Path:
    """Export the backbone once, so no size's peak includes the one-off ONNX export."""
    cache = work / "warm-cache"
    shutil.rmtree(cache, ignore_errors=True)
    subprocess.run(command(work, pool_csv(work, 50), cache, work / "warm-run", img_size), check=True,
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(work / "warm-run")
    return cache / "onnx"


def run_size(work: Path, n: int, onnx: Path, img_size: int) -> dict:
    cache, out = work / f"cache-{n}", work / f"run-{n}"
    for folder in (cache, out):
        shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(onnx, cache / "onnx")  # features cold, runtime warm
    row = {"images": n, **measure(command(work, pool_csv(work, n), cache, out, img_size))}
    shutil.rmtree(cache)
    return row


def verdict(rows: list[dict]) -> dict:
    small, big = rows[0], rows[-1]
    ratio = big["peak_mb"] / small["peak_mb"]
    per_image_kb = (big["peak_mb"] - small["peak_mb"]) * 1024 / max(big["images"] - small["images"], 1)
    ok = ratio <= RATIO_MAX and big["peak_mb"] <= PEAK_MAX_MB and all(r["exit_code"] == 0 for r in rows)
    return {"ratio": ratio, "kb_per_extra_image": per_image_kb, "pass": ok,
            "target": f"peak({big['images']}) <= {RATIO_MAX}x peak({small['images']}) and <= {PEAK_MAX_MB} MB"}


def table(rows: list[dict], result: dict) -> str:
    lines = ["| images | peak RSS, largest process (MB) | peak PSS, process tree (MB) | wall (s) | exit |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['images']:,} | {r['peak_rss_mb']:.0f} | {r['peak_tree_pss_mb']:.0f} | {r['seconds']:.0f} "
              f"| {r['exit_code']} |" for r in rows]
    lines.append(f"\n{result['target']}: ratio {result['ratio']:.2f}, "
                 f"{result['kb_per_extra_image']:.1f} KB per extra image -> {'PASS' if result['pass'] else 'FAIL'}")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        write_labeled(work)
        onnx = warm_onnx(work, args.img_size)
        rows = [run_size(work, n, onnx, args.img_size) for n in sizes]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = verdict(rows)
    RESULTS.mkdir(exist_ok=True)
    report = {"settings": {"sizes": sizes, "img_size": args.img_size, "image_side": SIDE, "mode": "head",
                           "n_trials": 1, "cpu_count": os.cpu_count()}, "rows": rows, **result}
    (RESULTS / "bench_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows, result))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
