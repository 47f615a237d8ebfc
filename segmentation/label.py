"""`label_pool()`: the pseudo-mask loop over the images of a folder that have no mask yet.

Each trial
1. trains a UNet (segmentation.engine.fit) on the human masks plus the pseudo-masks accepted so
   far; validation uses human masks only (a fixed, seeded share of them);
2. predicts every pool image still unaccepted, with flip test-time augmentation, at the image's
   own size;
3. accepts an image's pseudo-mask when its confidence (segmentation.confidence) reaches the
   threshold. Pixels less sure than the threshold are written as IGNORE (255), which every loss
   leaves out, so training never forces them to a class.
Accepted pseudo-masks stay accepted; the loop ends after `n_trials` or when the pool is empty.
Files and resume: segmentation.label_files. Tracking is the caller's, through `LabelHooks`.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from classification.config import resolve_device
from classification.errors import InputError
from classification.images import decode
from classification.locks import exclusive, run_lock
from classification.models import check_model_name
from segmentation import label_files as files
from segmentation.config import SegConfig
from segmentation.confidence import decide_pool, image_rule
from segmentation.data import IGNORE, MaskSet, load_pairs, read_mask, report_skips
from segmentation.engine import Arrays, SegFitResult, fit
from segmentation.inference import make_runner, predict_probs, resize_probs
from segmentation.metrics import pseudo_mask_scores
from segmentation.predict import write_png
from segmentation.train import val_split
from segmentation.transforms import decode_pairs, scale_to

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelSpec:
    images: Path                      # every image; those without a mask form the pool
    masks: Path                       # human masks (PNGs of class indices, same stems)
    out: Path
    n_trials: int = 3
    threshold: float = 0.9            # image confidence to accept, and pixel confidence to keep a pixel
    truth_masks: Path | None = None   # the pool's true masks: each trial scores its pseudo-masks
    classes: Path | None = None       # index,name CSV (default: beside --masks, else class_<i>)
    rule: str = "defect_mean"         # image confidence (segmentation.confidence.IMAGE_RULES)
    resume: bool = False


@dataclass
class LabelHooks:
    """Callbacks: `on_start(run)` once the inputs are checked and the folder is locked,
    `on_epoch(record)` per training epoch (with `trial`), `on_trial(record)` after a trial's files
    are written."""
    on_start: Callable[["LabelRun"], None] | None = None
    on_epoch: Callable[[dict], None] | None = None
    on_trial: Callable[[dict], None] | None = None


@dataclass
class LabelRun:
    spec: LabelSpec
    cfg: SegConfig
    human: MaskSet
    pool: MaskSet
    truth: dict[str, str]                  # pool stem -> true mask file
    settings: dict
    accepted: dict[str, dict] = field(default_factory=dict)  # stem -> path, mask, confidence, trial
    records: list[dict] = field(default_factory=list)
    trial: int = 0                          # the last completed trial
    finished: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _arrays: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def left(self) -> list[int]:
        return [i for i, s in enumerate(self.pool.stems) if s not in self.accepted]


def label_pool(spec: LabelSpec, cfg: SegConfig, hooks: LabelHooks | None = None,
               progress: bool = False) -> LabelRun:
    """Run (or with `spec.resume` continue) the loop into `spec.out`; returns the finished run."""
    hooks = hooks or LabelHooks()
    check_spec(spec)
    check_model_name(cfg.encoder)
    run = load_run(spec, cfg)
    out = Path(spec.out)
    with exclusive(run_lock(out), f"output folder {out}"):
        restore(run)
        if hooks.on_start:
            hooks.on_start(run)
        for trial in range(run.trial + 1, spec.n_trials + 1):
            if not run.left:
                break
            run_trial(run, trial, hooks, progress)
        run.finished = True
        commit(run)
    return run


def check_spec(spec: LabelSpec) -> None:
    if spec.n_trials < 1:
        raise InputError(f"--n-trials must be at least 1, got {spec.n_trials}")
    if not 0 < spec.threshold <= 1:
        raise InputError(f"--threshold must be in (0, 1], got {spec.threshold}")
    try:
        image_rule(spec.rule)
    except ValueError as e:
        raise InputError(str(e)) from None
    out = Path(spec.out).resolve()
    written = files.mask_path(out, "x").parent
    for flag, folder in (("--images", spec.images), ("--masks", spec.masks), ("--truth-masks", spec.truth_masks)):
        if folder is None:
            continue
        folder = Path(folder).resolve()
        if out == folder or folder in out.parents or folder == written or written in folder.parents:
            raise InputError(f"--out {spec.out} would write inside {flag} {folder}; inputs are never written to")


def load_run(spec: LabelSpec, cfg: SegConfig) -> LabelRun:
    """Split --images into human pairs and the pool; the pool's truth when given."""
    pairs = load_pairs(spec.images, spec.masks, spec.classes, keep_unpaired=True)
    human = pairs.subset([i for i, m in enumerate(pairs.masks) if m is not None])
    pool = pairs.subset([i for i, m in enumerate(pairs.masks) if m is None])
    if not len(human):
        raise InputError(f"no usable human mask in {spec.masks} for the images in {spec.images}")
    if not len(pool):
        raise InputError(f"nothing to label: every usable image in {spec.images} has a mask in {spec.masks}")
    truth = load_truth(spec, pool) if spec.truth_masks is not None else {}
    report_skips(pairs.skipped)
    settings = {"images": str(Path(spec.images).resolve()), "masks": str(Path(spec.masks).resolve()),
                "truth_masks": str(Path(spec.truth_masks).resolve()) if spec.truth_masks else None,
                "classes": pairs.classes, "threshold": spec.threshold, "rule": spec.rule,
                "n_trials": spec.n_trials, **{f"train.{k}": v for k, v in cfg.to_dict().items()},
                "human": _digest(human.stems, human.masks), "pool": _digest(pool.stems)}
    return LabelRun(spec, cfg, human, pool, truth, settings, skipped=pairs.skipped)


def load_truth(spec: LabelSpec, pool: MaskSet) -> dict[str, str]:
    pairs = load_pairs(spec.images, spec.truth_masks, spec.classes, keep_unpaired=True)
    known = {s: m for s, m in zip(pairs.stems, pairs.masks) if m is not None}
    truth = {s: known[s] for s in pool.stems if s in known}
    if not truth:
        raise InputError(f"--truth-masks {spec.truth_masks} holds no usable mask for a pool image")
    return truth


def _digest(*lists) -> str:
    return hashlib.sha256(repr(lists).encode()).hexdigest()[:16]


def restore(run: LabelRun) -> None:
    """Take up the saved state (--resume), or refuse to start over another run's files."""
    out = Path(run.spec.out)
    saved = files.read_state(out)
    if saved is None:
        return
    if not run.spec.resume:
        files.refuse_existing(out)
    files.check_resumable(out, saved, run.settings)
    run.accepted, run.records, run.trial = saved["accepted"], saved["records"], int(saved["trial"])
    kept = {Path(a["mask"]).resolve() for a in run.accepted.values()}
    for png in (out / "masks").rglob("*.png"):  # written by a trial that did not complete
        if png.resolve() not in kept:
            png.unlink()
    _logger.info("resuming %s after trial %d", out, run.trial)


def run_trial(run: LabelRun, trial: int, hooks: LabelHooks, progress: bool) -> dict:
    start = time.perf_counter()
    train, pseudo, val = training_arrays(run)
    on_epoch = (lambda r: hooks.on_epoch({**r, "trial": trial})) if hooks.on_epoch else None
    result = fit(run.cfg.with_(seed=(run.cfg.seed + trial - 1) % 2**32), train, val, run.human.classes,
                 pseudo=pseudo, progress=progress, on_epoch=on_epoch)
    left = run.left
    conf, ok, ignored = np.zeros(len(left)), np.zeros(len(left), bool), []
    for j, probs in enumerate(predict_pool(run, result, left)):  # one image at a time: bounded memory
        c, a, masks = decide_pool([probs], run.spec.rule, run.spec.threshold, run.spec.threshold)
        conf[j], ok[j] = c[0], a[0]
        if ok[j]:
            accept_one(run, left[j], masks[0], float(conf[j]), trial)
            ignored.append(float((masks[0] == IGNORE).mean()))
    record = trial_record(run, trial, result, conf, ok, ignored)
    record.update(accepted_stems=[run.pool.stems[left[j]] for j in np.flatnonzero(ok)],
                  seconds=round(time.perf_counter() - start, 3))
    run.records.append(record)
    run.trial = trial
    commit(run)
    if hooks.on_trial:
        hooks.on_trial(record)
    return record


def training_arrays(run: LabelRun) -> tuple[Arrays, Arrays, Arrays]:
    """(human training pairs, accepted pseudo-masks, human validation pairs), decoded once."""
    human_train, human_val = val_split(len(run.human), run.cfg.val_fraction, run.cfg.seed)
    need = [(s, img, m) for s, img, m in zip(run.human.stems, run.human.images, run.human.masks)]
    need += [(s, a["path"], a["mask"]) for s, a in sorted(run.accepted.items())]
    missing = [x for x in need if x[0] not in run._arrays]
    if missing:
        pairs = MaskSet([x[0] for x in missing], [x[1] for x in missing], [x[2] for x in missing],
                        run.human.classes)
        run._arrays.update(zip(pairs.stems, decode_pairs(pairs, run.cfg.max_side)))
    return ([run._arrays[run.human.stems[i]] for i in human_train], [run._arrays[s] for s in sorted(run.accepted)],
            [run._arrays[run.human.stems[i]] for i in human_val])


def predict_pool(run: LabelRun, result: SegFitResult, rows: list[int]):
    """Class probabilities (C, H, W) at each image's own size, with flip test-time augmentation."""
    runner = make_runner(result.model, "torch", resolve_device(run.cfg.device))
    sizes: list[tuple[int, int]] = []

    def images():
        for i in rows:
            img = decode(run.pool.images[i])
            sizes.append(img.shape[:2])
            yield scale_to(img, run.cfg.max_side)

    for k, probs in enumerate(predict_probs(runner, images(), result.mean, result.std, tta=True,
                                            batch_size=run.cfg.batch_size)):
        yield resize_probs(probs, sizes[k])


def accept_one(run: LabelRun, i: int, mask: np.ndarray, conf: float, trial: int) -> None:
    stem = run.pool.stems[i]
    path = files.mask_path(run.spec.out, stem)
    write_png(path, mask)
    run.accepted[stem] = {"path": run.pool.images[i], "mask": str(path.resolve()), "confidence": conf,
                          "trial": trial}


def trial_record(run: LabelRun, trial: int, result: SegFitResult, conf: np.ndarray,
                 ok: np.ndarray, ignored: list[float]) -> dict:
    best = result.best or {}
    record = {"trial": trial, "train_size": result.n_train, "predicted": int(len(conf)),
              "accepted": int(ok.sum()), "accepted_total": len(run.accepted), "pool_left": len(run.left),
              "coverage": len(run.accepted) / len(run.pool),
              "mean_confidence": float(conf.mean()) if len(conf) else None,
              "mean_confidence_accepted": float(conf[ok].mean()) if ok.any() else None,
              "ignored_pixels": float(np.mean(ignored)) if ignored else None,
              "val_miou": best.get("val_miou"), "val_dice": best.get("val_dice"),
              "best_epoch": best.get("epoch"), "train_seconds": result.train_seconds}
    if run.truth:
        record.update(truth_scores(run))
    return record


def truth_scores(run: LabelRun) -> dict:
    """Mean IoU (defect classes) of every accepted pseudo-mask with a true mask, over the pixels
    it keeps; `truth_scored` says how many were compared."""
    stems = [s for s in sorted(run.accepted) if s in run.truth]
    if not stems:
        return {"pseudo_miou": None, "pixels_kept": None, "truth_scored": 0}
    masks = [read_mask(run.accepted[s]["mask"]) for s in stems]
    scored = pseudo_mask_scores(masks, [read_mask(run.truth[s]) for s in stems], run.human.classes)
    return {**scored, "truth_scored": len(stems)}


def commit(run: LabelRun) -> None:
    """dataset.csv and metrics.json, then state.json: the state names only work on disk."""
    out = Path(run.spec.out)
    files.write_dataset(out, list(zip(run.human.images, run.human.masks)), run.accepted)
    header = {"classes": run.human.classes, "threshold": run.spec.threshold, "rule": run.spec.rule,
              "n_human": len(run.human), "n_pool": len(run.pool),
              "truth_masks": run.settings["truth_masks"]}
    files.write_metrics(out, header, run.records)
    files.write_state(out, run.settings, run.trial, run.accepted, run.records, run.finished)
