"""Inference throughput of the EfficientNet-Lite backbones on CPU: eager vs channels_last vs ONNX
for each of `--models` at each of `--sizes`, then end-to-end `predict()` (cold feature cache) of the
default model against a naive eager PyTorch loop.

Run:  python benchmarks/bench_inference.py [--data /work/shared/data/cifar10_bench] [--quick]
          [--models tf_efficientnet_lite0,tf_efficientnet_lite1,tf_efficientnet_lite2] [--sizes 160,224]
Writes benchmarks/results/bench_inference.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from classification.cache import FeatureCache
from classification.config import DEFAULT_MODEL
from classification.data import load_unlabeled
from classification.inference import predict
from classification.models import backbone_features, classifier_module, create_classifier
from classification.runtime import make_runner
from classification.transforms import create_transform, data_config

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_bench"))
    p.add_argument("--quick", action="store_true", help="end-to-end on ~1,000 images only")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2, help="untimed batches")
    p.add_argument("--batches", type=int, default=5, help="timed batches")
    p.add_argument("--models", default=DEFAULT_MODEL, help="backbones for the synthetic benchmark")
    p.add_argument("--sizes", default="160,224", help="sizes for the synthetic benchmark; 'own' = the model's")
    p.add_argument("--e2e-sizes", default="224", help="sizes for the end-to-end benchmark")
    p.add_argument("--check", type=int, default=512, help="images compared between the two paths")
    return p.parse_args()


def make_model(name: str = DEFAULT_MODEL) -> torch.nn.Module:
    """The benchmark model, with a random (seeded) plain linear head: the default zero head gives
    uniform probabilities, which would make the probability and argmax checks meaningless."""
    model = create_classifier(name, 10, norm=False).eval()
    gen = torch.Generator().manual_seed(0)
    head = classifier_module(model)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.1)
        head.bias.zero_()
    return model


def time_batches(fn, x: torch.Tensor, warmup: int, batches: int) -> float:
    """Images per second of `fn(x)`: the median batch time after `warmup` untimed calls (the median
    keeps a burst of load from other processes on this shared machine out of the number)."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return len(x) / float(np.median(times))


def eager_fn(model, channels_last: bool):
    model = copy.deepcopy(model).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(x):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return backbone_features(model, x)

    return run


def synthetic(model, size: int, args, rows: list[dict]) -> None:
    arch = model.pretrained_cfg["architecture"]
    x = torch.randn(args.batch, 3, size, size)
    eager = time_batches(eager_fn(model, False), x, args.warmup, args.batches)
    cl = time_batches(eager_fn(model, True), x, args.warmup, args.batches)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        runner = make_runner(model, size, "onnx", "cpu", Path(tmp))
        export_s = time.perf_counter() - t0
        onnx = time_batches(runner, x, args.warmup, args.batches)
    for name, ips, extra in (("eager fp32", eager, None), ("eager channels_last", cl, None),
                             ("ONNX Runtime (make_runner)", onnx, export_s)):
        rows.append({"stage": f"synthetic {arch}", "path": name, "size": size, "images": args.batches * args.batch,
                     "seconds": args.batch / ips, "img_s": ips, "speedup": ips / eager,
                     "export_s": extra})


class NaiveDataset(Dataset):
    """What a user would write: PIL decode in the main process, the same eval transform."""

    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = np.asarray(Image.open(self.paths[i]).convert("RGB"))
        return torch.from_numpy(self.transform(image=img)["image"].transpose(2, 0, 1).copy())


@torch.inference_mode()
def naive_probs(model, paths, data_cfg, batch: int) -> np.ndarray:
    loader = DataLoader(NaiveDataset(paths, create_transform("eval", data_cfg)), batch_size=batch,
                        num_workers=0)
    return torch.cat([torch.softmax(model(x), dim=1) for x in loader]).numpy()


def end_to_end(model, images, size: int, args, rows: list[dict], checks: list[dict]) -> None:
    data_cfg = data_config(model, size)
    n = len(images)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_runner(model, size, "onnx", "cpu", Path(tmp))  # exports into the cache root
        export_s = time.perf_counter() - t0
        cache = FeatureCache(tmp)  # cold for features; predict() reuses the export under tmp/onnx
        t0 = time.perf_counter()
        pred = predict(model, images, data_cfg, cache, runtime="onnx", device="cpu", batch_size=args.batch)
        fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = naive_probs(model, images.paths, data_cfg, args.batch)
    eager_s = time.perf_counter() - t0
    rows.append({"stage": "end-to-end", "path": "naive eager (PIL, workers=0, fp32)", "size": size,
                 "images": n, "seconds": eager_s, "img_s": n / eager_s, "speedup": 1.0, "export_s": None})
    for name, secs in (("predict(), cold cache, excl. export", fast_s),
                       ("predict(), cold cache, incl. export", fast_s + export_s)):
        rows.append({"stage": "end-to-end", "path": name, "size": size, "images": n, "seconds": secs,
                     "img_s": n / secs, "speedup": eager_s / secs, "export_s": export_s})
    k = min(args.check, n)
    assert pred.ok[:k].all(), "some of the checked images failed to decode"
    delta = float(np.abs(pred.probs[:k] - ref[:k]).max())
    agree = float((pred.probs[:k].argmax(1) == ref[:k].argmax(1)).mean())
    checks.append({"size": size, "images": k, "max_abs_dprob": delta, "argmax_agreement": agree,
                   "prob_max_mean": float(ref[:k].max(1).mean())})


def print_table(rows: list[dict], checks: list[dict]) -> None:
    print("| stage | path | size | images | seconds (synthetic: median per batch) | img/s "
          "| speed-up vs eager |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['stage']} | {r['path']} | {r['size']} | {r['images']} | {r['seconds']:.1f} | "
              f"{r['img_s']:.1f} | {r['speedup']:.2f}x |")
    print()
    for r in rows:
        if r["export_s"] is not None and r["path"].startswith("ONNX"):
            print(f"- ONNX export + session ({r['size']} px, synthetic): {r['export_s']:.1f} s")
    for r in rows:
        if r["export_s"] is not None and r["path"].endswith("excl. export"):
            print(f"- ONNX export + session ({r['size']} px, end-to-end): {r['export_s']:.1f} s")
    for c in checks:
        print(f"- check {c['size']} px, first {c['images']} images: max |dprob| = {c['max_abs_dprob']:.2e}, "
              f"argmax agreement = {c['argmax_agreement']:.4f} (mean max prob {c['prob_max_mean']:.3f})")


def code_state() -> dict:
    """The commit and the uncommitted files of `classification/`, which the numbers depend on."""
    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=RESULTS.parent.parent, capture_output=True,
                              text=True).stdout.rstrip()
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "dirty": git("status", "--porcelain", "classification").splitlines()}


def main() -> int:
    args = parse_args()
    unlabeled_dir = Path(args.data) / "unlabeled"
    if not unlabeled_dir.is_dir():
        print(f"skipped: benchmark data not found at {unlabeled_dir}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    rows, checks = [], []
    for name in args.models.split(","):
        backbone = make_model(name)
        for size in args.sizes.split(","):
            synthetic(backbone, data_config(backbone).size if size == "own" else int(size), args, rows)
    model = make_model()
    images = load_unlabeled(unlabeled_dir)
    if args.quick:
        images = images.subset(np.arange(min(1000, len(images))))
    for size in map(int, args.e2e_sizes.split(",")):
        end_to_end(model, images, size, args, rows, checks)
    print_table(rows, checks)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"args": vars(args), "code": code_state(), "loadavg_end": os.getloadavg(),
           "torch_threads": torch.get_num_threads(), "rows": rows, "checks": checks}
    (RESULTS / "bench_inference.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
