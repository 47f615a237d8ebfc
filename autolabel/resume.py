"""Crash safety: how `autolabel --resume DIR` finds a run's saved settings and state, checks that
they still describe the same images and settings, and clears what a killed run left half-done.

state.json is a trial's commit point: `RunWriter` writes it last, after the trial's CSV,
dataset.csv and metrics.json. A run killed anywhere resumes after the last trial whose state.json
reached the disk and redoes whatever came after it, writing the same bytes again. What state.json
holds is `autolabel.state.LoopState`; the loop restores itself from it (`load_state_dict`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from classification.errors import InputError, brief, first_line
from classification.yamlfile import read_yaml


def fingerprint(data, train, loop) -> str:
    """A digest of everything a run's labels depend on: settings, classes, and every image's path,
    content hash and human label (test images too: they feed the trial records)."""
    test = data.test
    # not the trial budget: it says how many trials run, not what any of them does, and
    # `--resume --reviewed` may raise it (autolabel.review.feedback)
    loop = {k: v for k, v in loop.to_dict().items() if k != "n_trials"}
    parts = {"train": train.to_dict(), "loop": loop, "classes": data.classes,
             "labeled": [data.labeled.paths, data.labeled.hashes, data.labeled.labels.tolist()],
             "pool": [data.pool.paths, data.pool.hashes],
             "test": None if test is None else [test.paths, test.hashes, test.labels.tolist()]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def read_run(folder: Path) -> tuple[dict, dict | None]:
    """(config.yaml, state.json or None if no trial completed) of a run folder, or a one-line error."""
    if not (folder / "config.yaml").is_file():
        raise InputError(f"--resume {folder}: no run there (no config.yaml); start one with --out {folder}")
    try:
        config = read_yaml(folder / "config.yaml", "the run's config")
        state = json.loads((folder / "state.json").read_text()) if (folder / "state.json").is_file() else None
    except (OSError, ValueError) as e:
        raise InputError(f"--resume {folder}: cannot read the saved run: {first_line(e)}") from None
    if not isinstance(config, dict) or not {"train", "loop", "data"} <= set(config):
        raise InputError(f"--resume {folder}: config.yaml lacks the train/loop/data sections of a run")
    return config, state


def config_changes(saved: dict, requested: dict) -> list[str]:
    """'section.key <saved>, not <requested>' for every setting that differs."""
    return [f"{section}.{key} {_shown(saved[section].get(key))}, not {_shown(value)}"
            for section in ("train", "loop", "data") for key, value in requested[section].items()
            if saved[section].get(key) != value]


def _shown(value) -> str:
    return "unset" if value is None else brief(value)


def clean_after(folder: Path, trial: int) -> None:
    """Drop what a killed run left beyond its last commit: later trials' CSVs, temp files of
    interrupted atomic writes. (The files ahead of state.json are rewritten by the redone trial.)"""
    for csv in (folder / "trials").glob("trial_*.csv"):
        if csv.stem[6:].isdigit() and int(csv.stem[6:]) > trial:
            csv.unlink()
    for sub in (folder, folder / "trials", folder / "checkpoint"):
        for tmp in sub.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
