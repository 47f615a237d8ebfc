"""Class + box models on pets_boxes (seed 003), rows side by side on one seeded 80/20 split:
letterbox against stretched resize, box weight 100 against 1,000, heads only against
--unfreeze 2 and 4, supervised with 100 % and 20 % of the boxes, the pseudo-box loop of
`autolabel localize label` with 20 % of the boxes (the rest its pool), and the head boxes (labels_head.csv). Per row: class accuracy, mean
IoU (plain view and flip TTA), share with IoU >= 0.5, the mean-box baseline, train img/s (image
views per second of optimisation), inference img/s and ms per image eager against ONNX Runtime
(the whole model, decoding included).

Run:  nice -n 10 python benchmarks/bench_localize.py [--config configs/localize/v3.yaml]
          [--data /work/shared/data/pets_boxes] [--cache-dir /work/cache-loc] [--rows a,b] [--seed 0]
          [--thresholds 0.9,0.8] [--trials 3] [--teachers 5] [--seeds 5]
The 20 % rows (`boxes_20`, `loop_20`) also train with training seeds 1 .. --seeds - 1 (each loop
choosing its threshold on validation, as seed 0 does) and report the mean and spread of their test
mean IoU: on 51 training images one seed's fit is a draw, not the method.
Each finished row is kept in benchmarks/results/localize/<row>.json and not run again (delete the
file to rerun it), so an interrupted run resumes. Prints a markdown table; writes
benchmarks/results/bench_localize.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from classification.cache import FeatureCache
from classification.data import stratified_split
from classification.fileio import write_json
from localization.boxes import box_iou, from_relative, mean_box
from localization.config import LocalizeConfig, load_localize_config
from localization.data import BoxSet, load_boxes
from localization.decision import BoxRule, propose
from localization.heads import score
from localization.labeling import LabelRun, LabelSpec, label_pool, seeded
from localization.pipeline import predict_views, train_localizer
from localization.predict import predict_images
from localization.views import EVAL, FLIP

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = {  # name -> (config overrides "section.field", share of training boxes, labels file)
    "recipe": ({}, 1.0, "labels.csv"),
    "stretch": ({"augmentation.resize": "stretch"}, 1.0, "labels.csv"),
    "box_weight_100": ({"criterion.box_weight": 100.0}, 1.0, "labels.csv"),
    "box_weight_1000": ({"criterion.box_weight": 1000.0}, 1.0, "labels.csv"),
    "heads_only": ({"training.unfreeze": 0}, 1.0, "labels.csv"),
    "unfreeze_2": ({"training.unfreeze": 2}, 1.0, "labels.csv"),
    "unfreeze_4": ({"training.unfreeze": 4}, 1.0, "labels.csv"),
    "boxes_20": ({}, 0.2, "labels.csv"),
    "loop_20": ({}, 0.2, "labels.csv"),
    "head_boxes": ({}, 1.0, "labels_head.csv"),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "pets_boxes"))
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "localize" / "v3.yaml"))
    p.add_argument("--cache-dir", default=str(RESULTS / "cache"))
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--thresholds", default="0.9,0.8", help="loop thresholds (class confidence and box agreement), "
                   "comma-separated: one loop each, the one best on validation reported")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--teachers", type=int, default=LabelSpec.teachers, help="the loop's heads per trial")
    p.add_argument("--seeds", type=int, default=5, help="training seeds for the 20 %% rows (mean and spread reported)")
    return p.parse_args()


def row_config(base: LocalizeConfig, overrides: dict) -> LocalizeConfig:
    values = base.to_dict()
    for key, value in overrides.items():
        section, name = key.split(".")
        values[section][name] = value
    return LocalizeConfig.from_dict(values)


def splits(data: BoxSet, share: float, seed: int) -> dict[str, BoxSet]:
    """80/20 train/test per class; with share < 1 the train part keeps `share` as human boxes
    (per class) and the rest becomes an unlabelled pool (its truth kept for scoring only)."""
    train, test = stratified_split(data.images.labels, 0.2, seed)
    sets = {"train": data.subset(train), "test": data.subset(test)}
    if share < 1:
        human, pool = stratified_split(sets["train"].images.labels, 1 - share, seed)
        sets["pool"], sets["train"] = sets["train"].subset(pool), sets["train"].subset(human)
    return sets


def evaluate(trained, sets: dict, cache: FeatureCache, timing: bool = True) -> dict:
    test = sets["test"]
    pred = predict_views(trained, test.images, cache, views=[EVAL, FLIP])
    plain = score(pred.probs[0], pred.boxes[0], test.images.labels, test.boxes)
    tta = score(pred.probs.mean(0), pred.boxes.mean(0), test.images.labels, test.boxes)
    base = mean_box(sets["train"].boxes, sets["train"].sizes)
    result = trained.result
    out = {"accuracy": plain["accuracy"], "mean_iou": plain["mean_iou"], "iou50": plain["iou50"],
           "mean_iou_tta": tta["mean_iou"], "accuracy_tta": tta["accuracy"],
           "mean_box_iou": float(box_iou(from_relative(base, test.sizes), test.boxes).mean()),
           "n_train": trained.n_train, "n_val": trained.n_val, "n_test": len(test),
           "best_epoch": result.best.get("epoch"), "epochs": len(result.history),
           "train_img_s": result.train_images / max(result.train_seconds, 1e-9),
           "train_seconds": result.train_seconds}
    for runtime in ("torch", "onnx") if timing else ():
        predict_images(trained, test.images.subset(np.arange(min(8, len(test)))), runtime=runtime, cache_root=cache.root)  # warm
        timed = predict_images(trained, test.images, runtime=runtime, cache_root=cache.root)
        out[f"{runtime}_img_s"] = 1000.0 / timed.ms_per_image
        out[f"{runtime}_ms"] = timed.ms_per_image
    return out


def supervised(cfg: LocalizeConfig, sets: dict, cache: FeatureCache, timing: bool = True) -> tuple[object, dict]:
    start = time.perf_counter()
    trained = train_localizer(sets["train"], cfg, cache)
    out = evaluate(trained, sets, cache, timing)
    out["wall_seconds"] = time.perf_counter() - start
    return trained, out


def loop(cfg: LocalizeConfig, sets: dict, cache: FeatureCache, spec: LabelSpec, timing: bool = True) -> dict:
    """`autolabel localize label`'s loop (localization.labeling) on the human boxes and the pool,
    the pool's truth scoring what each trial accepts; test scores of the last trial's model."""
    start = time.perf_counter()
    labeled = label_pool(sets["train"], sets["pool"], cfg, cache, spec, LabelRun(truth=sets["pool"]))
    out = evaluate(labeled.trained, sets, cache, timing)
    out.update(threshold=spec.threshold, rounds=labeled.history, wall_seconds=time.perf_counter() - start,
               val_mean_iou=labeled.trained.result.best.get("val_mean_iou"))
    return out


def rule_table(trained, sets: dict, cache: FeatureCache) -> list[dict]:
    """How many pool images each (confidence, agreement) rule accepts, and how good they are."""
    pool = sets["pool"]
    pred = predict_views(trained, pool.images, cache, views=[EVAL, FLIP])
    rows = []
    for conf in (0.0, 0.8, 0.9, 0.95):
        for agree in (0.0, 0.7, 0.8, 0.85, 0.9):
            prop = propose(pred.probs, pred.boxes, pred.ok, BoxRule(conf, agree))
            acc = prop.accepted
            rows.append({"min_confidence": conf, "min_agreement": agree, "accepted": int(acc.sum()),
                         "class_precision": float((prop.labels[acc] == pool.images.labels[acc]).mean()) if acc.any() else None,
                         "pseudo_mean_iou": float(box_iou(prop.boxes[acc], pool.boxes[acc]).mean()) if acc.any() else None})
    return rows


def run_row(name: str, base: LocalizeConfig, args, cache: FeatureCache) -> dict:
    overrides, share, labels = ROWS[name]
    cfg = row_config(base, overrides)
    sets = splits(load_boxes(Path(args.data) / labels), share, args.seed)
    out = one_fit(name, cfg, sets, cache, args)
    if share < 1:
        more = [one_fit(name, seeded(cfg, s), sets, cache, args, timing=False) for s in range(1, args.seeds)]
        ious = [out["mean_iou"]] + [r["mean_iou"] for r in more]
        out.update(seed_mean_iou=ious, mean_iou_seeds=float(np.mean(ious)), mean_iou_sd=float(np.std(ious)),
                   accuracy_seeds=float(np.mean([out["accuracy"]] + [r["accuracy"] for r in more])))
    return out


def one_fit(name: str, cfg: LocalizeConfig, sets: dict, cache: FeatureCache, args, timing: bool = True) -> dict:
    """The row's fit with `cfg` (its training seed included): supervised, or the loop at each threshold."""
    if name != "loop_20":
        trained, out = supervised(cfg, sets, cache, timing)
        if timing and "pool" in sets:
            out["rule_table"] = rule_table(trained, sets, cache)
        return out
    runs = [loop(cfg, sets, cache, LabelSpec(args.trials, float(t), args.teachers), timing)
            for t in args.thresholds.split(",")]
    best = max(runs, key=lambda r: r["val_mean_iou"])  # chosen on validation, never on the test split
    return {**best, "all_thresholds": [{k: r[k] for k in ("threshold", "mean_iou", "rounds")} for r in runs]}


def table(rows: dict) -> str:
    cols = [("accuracy", ".3f"), ("mean_iou", ".3f"), ("mean_iou_seeds", ".3f"), ("mean_iou_sd", ".3f"),
            ("mean_iou_tta", ".3f"), ("iou50", ".3f"), ("mean_box_iou", ".3f"), ("n_train", "d"), ("train_img_s", ".0f"), ("torch_img_s", ".1f"),
            ("onnx_img_s", ".1f"), ("torch_ms", ".1f"), ("onnx_ms", ".1f"), ("wall_seconds", ".0f")]
    lines = ["| row | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(format(r[c], f) if r.get(c) is not None else "-" for c, f in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("PIL", "matplotlib", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    base = load_localize_config(args.config)
    cache, rows, by_key = FeatureCache(args.cache_dir), {}, {}
    for name in args.rows.split(","):
        overrides, share, labels = ROWS[name]
        cfg = row_config(base, overrides).to_dict()
        # rows that resolve to the same run (the recipe is also one of box_weight_*, unfreeze_*) run once
        what = [cfg, share, labels, args.seed] + ([args.thresholds, args.trials, args.teachers] if name == "loop_20" else [])
        what += [args.seeds] if share < 1 else []
        key = hashlib.blake2b(json.dumps(what, sort_keys=True).encode(), digest_size=6).hexdigest()
        path = RESULTS / "localize" / f"{name}.json"
        done = json.loads(path.read_text()) if path.is_file() else {}
        if done.get("key") != key:
            logging.info("row %s", name)
            done = by_key.get(key) or {"key": key, "version": base.version, "config": cfg,
                                       **run_row(name, base, args, cache)}
            write_json(path, done)
        by_key[key] = done
        rows[name] = done
        print(table({name: done}).splitlines()[-1], flush=True)
    print(table(rows))
    write_json(RESULTS / "bench_localize.json", rows)


if __name__ == "__main__":
    main()
