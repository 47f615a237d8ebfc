"""The driver of `autolabel localize label`: inputs -> run folder lock -> saved state (with
--resume) -> MLflow tracker -> the pseudo-box loop, whose every trial the LabelsetWriter commits.

A run folder holds one run: starting again in a folder whose state.json exists is refused unless
--resume, which continues after the last completed trial with the same inputs and settings (a
larger --n-trials is allowed). A second process on the same folder is refused (RUN/.lock).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from autolabel.resume import clean_after
from autolabel.settings import open_cache
from classification.data import load_unlabeled
from classification.errors import InputError
from classification.fileio import write_text
from classification.locks import exclusive, run_lock
from localization.config import LocalizeConfig
from localization.data import BoxSet, load_boxes, pool_set
from localization.labeling import STOPS, LabelRun, LabelSpec, Resumed, label_pool
from localization.labelset import LabelsetWriter
from localization.labelstate import STATE_FILE, load_state, run_identity

PARENT_FILE = ".mlflow_run_id"  # the MLflow parent of the run in this folder


@dataclass
class LabelRequest:
    data: Path
    data_raw: Path
    out: Path
    spec: LabelSpec
    cfg: LocalizeConfig
    truth: Path | None = None
    cache_dir: Path | None = None
    resume: bool = False
    tracking: dict | None = None   # autolabel.tracking_tools.tracking_choice; None: off
    progress: bool = False
    echo: Callable[[str], None] = print


@dataclass
class LabelInputs:
    human: BoxSet
    pool: BoxSet
    truth: BoxSet | None

    @classmethod
    def load(cls, req: LabelRequest) -> "LabelInputs":
        human = load_boxes(req.data)
        pool = pool_set(load_unlabeled(req.data_raw), human.images)
        if not len(pool):
            raise InputError(f"no pool images in {req.data_raw} beside the ones in {req.data}")
        truth = load_boxes(req.truth, classes=human.images.classes) if req.truth is not None else None
        return cls(human, pool, truth)


def run_label(req: LabelRequest, on_trial: Callable = lambda record, outcome: None) -> dict:
    """Run (or continue) the loop into `req.out`; returns metrics.json's content."""
    inputs = LabelInputs.load(req)
    identity = run_identity(inputs.human, inputs.pool, inputs.truth, req.spec, req.cfg)
    _make_folder(req.out)
    with exclusive(run_lock(req.out), f"run folder {req.out}"):
        saved = _saved(req, identity)
        if saved and _done(saved, req.spec):
            req.echo(f"{req.out}: the run had already finished ({len(saved.history)} trial(s)); nothing to do")
            return LabelsetWriter(req.out, inputs.human, inputs.pool, req.spec, req.cfg, identity,
                                  saved.history).commit(saved.state, finished=True)
        if saved:
            clean_after(req.out, len(saved.history), model_dir="model")
            req.echo(f"resuming {req.out} after trial {len(saved.history)}")
        return _run(req, inputs, identity, saved, on_trial)


def _run(req: LabelRequest, inputs: LabelInputs, identity: dict, saved: Resumed | None, on_trial) -> dict:
    writer = LabelsetWriter(req.out, inputs.human, inputs.pool, req.spec, req.cfg, identity,
                            saved.history if saved else None)
    tracker = _tracker(req, saved)

    def callback(record, outcome):
        writer(record, outcome)
        if tracker:
            tracker(record, outcome)
        on_trial(record, outcome)

    try:
        labeled = label_pool(inputs.human, inputs.pool, req.cfg, open_cache(req.cache_dir), req.spec,
                             LabelRun(inputs.truth, req.progress, callback, saved))
        metrics = writer.commit(labeled.state, finished=True)
    except BaseException as e:
        if tracker:
            tracker.fail("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    if tracker:
        tracker.finish(metrics)
        line = tracker.describe()
        if line:
            req.echo(line)
    return metrics


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out} cannot be created: {e.strerror or e}") from None


def _saved(req: LabelRequest, identity: dict) -> Resumed | None:
    if not req.resume:
        if (req.out / STATE_FILE).exists():
            raise InputError(f"--out {req.out} already holds a localize label run; continue it with --resume, "
                             "or choose another folder")
        return None
    found = load_state(req.out, identity)
    if found is None:
        req.echo(f"--resume {req.out}: no trial had completed there; starting from the first")
        return None
    return found[0]


def _done(saved: Resumed, spec: LabelSpec) -> bool:
    last = saved.history[-1] if saved.history else {}
    return last.get("stop") in STOPS or len(saved.history) >= spec.n_trials


def _tracker(req: LabelRequest, saved: Resumed | None):
    """The started MLflow tracker, or None with --no-mlflow; a resumed run gets a new parent with
    param resumed_from, the earlier parent marked KILLED if it still shows RUNNING."""
    if req.tracking is None:
        return None
    from autolabel.tracking_localize import LocalizeTracker

    previous = _previous_parent(req.out) if saved or req.resume else None
    params = {"threshold": req.spec.threshold, "n_trials": req.spec.n_trials, "model": req.cfg.model.name,
              **({"resumed_from": previous} if previous else {})}
    tracker = LocalizeTracker(req.out, req.tracking.get("uri"), req.tracking.get("experiment"))
    tracker.start(req.cfg.to_dict(), params)
    if tracker.active and tracker.run_id:
        write_text(req.out / PARENT_FILE, tracker.run_id)
        if previous:
            with contextlib.suppress(Exception):  # another store, or a deleted run: nothing to close
                if tracker.client.get_run(previous).info.status == "RUNNING":
                    tracker.client.set_terminated(previous, "KILLED")
    return tracker


def _previous_parent(out: Path) -> str | None:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = (out / PARENT_FILE).read_text().strip()
        return text if text.isalnum() and len(text) <= 64 else None
    return None
