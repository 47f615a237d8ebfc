"""Crash safety: what a run saves after every trial (`state.json`), how `autolabel --resume DIR`
reads it back, and the fault-injection hook the tests kill runs with.

state.json is a trial's commit point: `RunWriter` writes it last, after the trial's CSV,
dataset.csv and metrics.json. A run killed anywhere resumes after the last trial whose state.json
reached the disk and redoes whatever came after it, writing the same bytes again.

No random-number state is saved because none carries over between trials: every fit reseeds from
`train.seed` (`classification.engine.fit` calls `seed_everything`; the split, the head's
generators and the DataLoader seeds derive from it; augmentation seeds from image content and
view), and feature extraction gives the same values whatever the batch. So trial i + 1 depends
only on the accepted labels, their confidences and the threshold policy's state after trial i;
the seed is stored for the record.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import yaml

from classification.errors import InputError, first_line

FORMAT = 1
CRASH_ENV = "AUTOLABEL_CRASH_AT"


def crash_point(name: str, trial: int) -> None:
    """Fault injection for tests: with AUTOLABEL_CRASH_AT=<name>:<trial> set, the process SIGKILLs
    itself here, as a power cut or the OOM killer would. Points: extract:0 (the labelled images'
    features are cached, the pool's not yet), train:<i> (after trial i's first epoch), commit:<i>
    (trial i's CSV, dataset.csv and metrics.json written, its state.json not), final:<n> (every
    trial committed, the final fit not done)."""
    if os.environ.get(CRASH_ENV) == f"{name}:{trial}":
        os.kill(os.getpid(), signal.SIGKILL)


def fingerprint(labeler) -> str:
    """A digest of everything a run's labels depend on: settings, classes, and every image's path,
    content hash and human label (test images too: they feed the trial records)."""
    test = labeler.test_
    parts = {"train": labeler.train.to_dict(), "loop": labeler.loop.to_dict(), "classes": labeler.classes_,
             "labeled": [labeler.labeled_.paths, labeler.labeled_.hashes, labeler.labeled_.labels.tolist()],
             "pool": [labeler.unlabeled_.paths, labeler.unlabeled_.hashes],
             "test": None if test is None else [test.paths, test.hashes, test.labels.tolist()]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def run_state(labeler, finished: bool = False, **extra) -> dict:
    """The JSON state after the last completed trial; `extra` (MLflow run id, cache folder) rides along."""
    return {"format": FORMAT, "trial": labeler.n_trials_, "finished": finished,
            "fingerprint": labeler.fingerprint_, "seed": labeler.train.seed,
            "pseudo_labels": labeler.pseudo_labels_.tolist(), "accepted_trial": labeler.accepted_trial_.tolist(),
            "confidence": labeler.confidence_.tolist(), "policy": labeler.policy_.state_dict(),
            "history": labeler.history_, "termination_reason": labeler.termination_reason_,
            "ood_guard": labeler.ood_.state_dict() if labeler.ood_ else None,
            "ood_score": labeler.ood_score_.tolist(), "ood_refused": labeler.ood_refused_.tolist(), **extra}


def restore_state(labeler, state: dict) -> None:
    """Put a prepared labeler (data loaded, policy created) back where `state` left it."""
    if state.get("format") != FORMAT or state.get("fingerprint") != labeler.fingerprint_:
        raise InputError("--resume: the images or settings differ from the ones the run started with "
                         "(fingerprint mismatch); resume with the same inputs, or start a new run")
    labeler.pseudo_labels_ = np.asarray(state["pseudo_labels"], np.int64)
    labeler.accepted_trial_ = np.asarray(state["accepted_trial"], np.int64)
    labeler.confidence_ = np.asarray(state["confidence"], np.float32)
    labeler.policy_.load_state_dict(state["policy"])
    labeler.history_, labeler.n_trials_ = list(state["history"]), int(state["trial"])
    labeler.ood_score_ = np.asarray(state["ood_score"], np.float32)
    labeler.ood_refused_ = np.asarray(state["ood_refused"], bool)
    labeler.ood_ = SavedGuard(state["ood_guard"]) if state["ood_guard"] else None


class SavedGuard:
    """The out-of-class guard as state.json keeps it: its pool scores are restored with it, so
    only its summary (threshold, k) is needed, not the labelled embeddings it was fitted on."""

    def __init__(self, state: dict):
        self._state = dict(state)
        self.threshold_, self.k_ = state["threshold"], state["k"]

    def state_dict(self) -> dict:
        return dict(self._state)


def read_run(folder: Path) -> tuple[dict, dict | None]:
    """(config.yaml, state.json or None if no trial completed) of a run folder, or a one-line error."""
    if not (folder / "config.yaml").is_file():
        raise InputError(f"--resume {folder}: no run there (no config.yaml); start one with --out {folder}")
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        state = json.loads((folder / "state.json").read_text()) if (folder / "state.json").is_file() else None
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise InputError(f"--resume {folder}: cannot read the saved run: {first_line(e)}") from None
    if not isinstance(config, dict) or not {"train", "loop", "data"} <= set(config):
        raise InputError(f"--resume {folder}: config.yaml lacks the train/loop/data sections of a run")
    return config, state


def config_changes(saved: dict, requested: dict) -> list[str]:
    """'section.key <saved>, not <requested>' for every setting that differs."""
    return [f"{section}.{key} {saved[section].get(key)!r}, not {value!r}"
            for section in ("train", "loop", "data") for key, value in requested[section].items()
            if saved[section].get(key) != value]


def clean_after(folder: Path, trial: int) -> None:
    """Drop what a killed run left beyond its last commit: later trials' CSVs, temp files of
    interrupted atomic writes. (The files ahead of state.json are rewritten by the redone trial.)"""
    for csv in (folder / "trials").glob("trial_*.csv"):
        if csv.stem[6:].isdigit() and int(csv.stem[6:]) > trial:
            csv.unlink()
    for sub in (folder, folder / "trials", folder / "checkpoint"):
        for tmp in sub.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
