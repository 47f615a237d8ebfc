"""Corrections fed back: `autolabel --reviewed review.csv` (a new run) or `autolabel --resume RUN
--reviewed review.csv`. Approved and corrected images become human labels from the next trial on,
images rejected without a correction are never labelled again (autolabel.guards.reviewed), and
dataset.csv lists the reviewed ones with source `human-reviewed`.

Resuming with --reviewed is the one settings change --resume accepts, with the trial budget that
goes with it: the run continues after its last completed trial up to --n-trials, by default the
saved budget, or one trial more when the budget is spent (a finished run is reopened). The
reviews a run has taken are copied into RUN/review/reviewed_NN.csv and listed in config.yaml
(data.reviewed); every start or resume applies them all, in order, so a run killed after taking a
review resumes with it.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import yaml

from autolabel.review.verdicts import read_review
from classification.data import ImageSet
from classification.digest import sealed
from classification.errors import InputError
from classification.fileio import write_json, write_text


def load_reviewed(files: list[str], pool: ImageSet, classes: list[str]) -> dict[str, str | None] | None:
    """path -> the class a person gave (None: rejected without one), the later review winning;
    rows not reviewed are left out. Every reviewed path must be one of the run's pool images."""
    if not files:
        return None
    in_pool = set(pool.paths)
    out: dict[str, str | None] = {}
    for f in files:
        for row in read_review(f, classes):
            if not row.reviewed:
                continue
            if row.path not in in_pool:
                raise InputError(f"--reviewed {f}: {row.path} is not one of this run's unlabelled images; "
                                 "feed back a review of this run (or of one on the same --data-raw)")
            out[row.path] = row.human_label
    return out


def reviewed_section(review: Path | None) -> dict:
    """A new run's data.reviewed entry (nothing without --reviewed)."""
    if review is None:
        return {}
    if not Path(review).is_file():
        raise InputError(f"--reviewed {review} does not exist")
    return {"reviewed": [str(Path(review).resolve())]}


def reopen(saved: dict, state: dict | None, req):
    """(config, state, request) for `--resume RUN --reviewed R`: R added to the run's reviews, the
    budget raised as the module says, the run no longer finished, and the request left with only
    the settings --resume compares."""
    listed = reviewed_section(req.data["reviewed"])["reviewed"]
    done = state["trial"] if state else 0
    default = max(saved["loop"]["n_trials"], done + 1)
    budget = req.loop.get("n_trials")
    if budget is None:
        budget = default
    elif budget <= done:
        raise InputError(f"--reviewed: the run has done {done} trial(s) and takes the review from the next one; "
                         f"give --n-trials above {done}, or leave it out ({default})")
    config = {**saved, "loop": {**saved["loop"], "n_trials": budget},
              "data": {**saved["data"], "reviewed": [*saved["data"].get("reviewed", []), *listed]}}
    if state is not None:
        state = {**state, "finished": False}
    rest = replace(req, data={k: v for k, v in req.data.items() if k != "reviewed"},
                   loop={k: v for k, v in req.loop.items() if k != "n_trials"})
    return config, state, rest


def keep_reviews(out: Path, resolved: dict, state: dict | None) -> dict:
    """Copy the reviews the run does not hold yet into RUN/review/reviewed_NN.csv and commit the
    change (config.yaml lists the copies; state.json, if any, says the run is not finished: it is
    written last, as in every trial). Returns the configuration with the copies."""
    files = resolved["data"].get("reviewed") or []
    home = (out / "review").resolve()

    def held(f: str) -> bool:  # a copy made before (RUN/review/review.csv itself is rewritten by `review`)
        return Path(f).parent == home and re.fullmatch(r"reviewed_\d+\.csv", Path(f).name) is not None

    if all(held(f) for f in files):
        return resolved
    copies = []
    for n, f in enumerate(files, start=1):
        if held(f):
            copies.append(f)
            continue
        copy = home / f"reviewed_{n:02d}.csv"
        write_text(copy, Path(f).read_text(encoding="utf-8-sig"))
        copies.append(str(copy))
    resolved = {**resolved, "data": {**resolved["data"], "reviewed": copies}}
    write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    if state is not None:
        write_json(out / "state.json", sealed(state))
    return resolved
