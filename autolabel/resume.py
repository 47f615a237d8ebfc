"""Crash safety: how `autolabel --resume DIR` finds a run's saved settings and state, checks that
they still describe the same images and settings, and clears what a killed run left half-done.

state.json is a trial's commit point: `RunWriter` writes it last, after the trial's CSV,
dataset.csv and metrics.json. A run killed anywhere resumes after the last trial whose state.json
reached the disk and redoes whatever came after it, writing the same bytes again. What state.json
holds is `autolabel.state.LoopState`; the loop restores itself from it (`load_state_dict`).

Nothing damaged is used: state.json carries the SHA-256 of its own content and of the files the
run committed (`RunWriter`). A damaged state.json is refused. A committed trial CSV that is
missing or damaged is refused too (a past trial's predictions are not kept to write it again);
a finished run whose dataset.csv, metrics.json or checkpoint is damaged redoes its final fit,
which writes them again. A state.json written before digests existed is read unchecked.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from classification.digest import damaged, seal_ok
from classification.errors import InputError, brief, first_line
from classification.yamlfile import read_yaml

_logger = logging.getLogger(__name__)
FINAL = ("dataset.csv", "metrics.json", "checkpoint/model.pt")  # what the final fit writes


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
             "test": None if test is None else [test.paths, test.hashes, test.labels.tolist()],
             "other": None if data.other is None else [data.other.paths, data.other.hashes]}
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
    if state is not None and (not isinstance(state, dict) or seal_ok(state) is False):
        raise InputError(f"--resume {folder}: state.json is damaged (its SHA-256 does not match its content); "
                         f"the run cannot go on from it: start a new run with another --out")
    return config, state


def verified(folder: Path, state: dict | None) -> dict | None:
    """`state`, once the outputs it committed are checked: a trial CSV that is missing or damaged
    is refused; a finished run with a damaged final output (`FINAL`) is reopened, with one warning,
    so that its final fit is redone. A state.json without digests is only checked for the final
    outputs being there. (An unfinished run's dataset.csv and metrics.json may be a killed trial's
    newer ones: they are written again.)"""
    if state is None:
        return None
    outputs = state.get("outputs") if isinstance(state.get("outputs"), dict) else None
    bad = damaged(folder, outputs) if outputs is not None else [n for n in FINAL if not (folder / n).is_file()]
    lost = [name for name in bad if name not in FINAL]
    if lost:
        raise InputError(f"--resume {folder}: {lost[0]} is damaged or missing (its SHA-256 does not match "
                         "state.json) and cannot be written again; restore it, or start a new run with another --out")
    if bad and state.get("finished"):
        _logger.warning("%s: %s damaged or missing; redoing the final fit to write %s again",
                        folder, ", ".join(bad), "it" if len(bad) == 1 else "them")
        return {**state, "finished": False}
    return state


def config_changes(saved: dict, requested: dict) -> list[str]:
    """'section.key <saved>, not <requested>' for every setting that differs."""
    return [f"{section}.{key} {_shown(saved[section].get(key))}, not {_shown(value)}"
            for section in ("train", "loop", "data") for key, value in requested[section].items()
            if saved[section].get(key) != value]


def _shown(value) -> str:
    return "unset" if value is None else brief(value)


def clean_after(folder: Path, trial: int, model_dir: str = "checkpoint") -> None:
    """Drop what a killed run left beyond its last commit: later trials' CSVs, temp files of
    interrupted atomic writes (in the run folder, trials/ and the model folder). The files ahead
    of state.json are rewritten by the redone trial."""
    for csv in (folder / "trials").glob("trial_*.csv"):
        if csv.stem[6:].isdigit() and int(csv.stem[6:]) > trial:
            csv.unlink()
    for sub in (folder, folder / "trials", folder / model_dir):
        for tmp in sub.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
