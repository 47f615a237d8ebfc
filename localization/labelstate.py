"""The pseudo-box loop's commit point: `state.json` in its output folder, written atomically (and
sealed with the SHA-256 of its own content) after each trial's other files, so a loop killed
anywhere continues after its last completed trial (`autolabel localize label --resume`).

    format     STATE_FORMAT
    settings   what the labels depend on: the threshold, the teachers and the resolved config (not the trial
               budget: a resumed loop may run more trials)
    inputs     SHA-256 of the human boxes, of the pool and of --truth (paths, contents, labels, boxes)
    trial      the last completed trial; history: its records; pool: the PoolState after it
    outputs    {trials/trial_NN.csv: SHA-256}: a damaged trial CSV cannot be written again
    finished   the loop has stopped (its trial budget, nothing accepted, or the pool used up)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from classification.digest import damaged, digests, seal_ok, sealed
from classification.errors import InputError, brief, first_line
from classification.fileio import write_json
from localization.config import LocalizeConfig
from localization.data import BoxSet
from localization.labeling import LabelSpec, PoolState, Resumed

STATE_FILE = "state.json"
STATE_FORMAT = "autolabel-localize-label/1"


def box_digest(data: BoxSet | None) -> str | None:
    """SHA-256 of a box set's paths, contents, labels and boxes (None for no set)."""
    if data is None:
        return None
    im = data.images
    boxes = [None if np.isnan(b).any() else np.round(b, 3).tolist() for b in data.boxes]
    parts = [im.paths, im.hashes, im.labels.tolist(), list(im.classes), boxes]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def run_identity(human: BoxSet, pool: BoxSet, truth: BoxSet | None, spec: LabelSpec, cfg: LocalizeConfig) -> dict:
    """The settings and inputs a saved loop must share with the one that continues it."""
    return {"settings": {"threshold": spec.threshold, "teachers": spec.teachers, "config": cfg.to_dict()},
            "inputs": {"human boxes (--data)": box_digest(human), "pool (--data-raw)": box_digest(pool),
                       "truth (--truth)": box_digest(truth)}}


def save_state(out: Path, identity: dict, history: list[dict], state: PoolState, outputs: dict,
               finished: bool) -> None:
    doc = {"format": STATE_FORMAT, **identity, "trial": len(history), "history": history,
           "pool": state.to_dict(), "outputs": outputs, "finished": finished}
    write_json(out / STATE_FILE, sealed(json.loads(json.dumps(doc, default=_plain))))


def trial_outputs(out: Path, history: list[dict]) -> dict[str, str]:
    """{trials/trial_NN.csv: SHA-256} of the completed trials' CSVs."""
    return digests(out, [trial_csv_name(r["trial"]) for r in history])


def trial_csv_name(trial: int) -> str:
    return f"trials/trial_{trial:02d}.csv"


def load_state(out: Path, identity: dict) -> tuple[Resumed, bool] | None:
    """(the saved loop to continue, whether it had finished), or None when no trial completed
    there; a one-line InputError when it cannot continue with `identity`'s settings and inputs."""
    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"--resume {out}: cannot read {STATE_FILE}: {first_line(e)}") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or seal_ok(doc) is not True:
        raise InputError(f"--resume {out}: {STATE_FILE} is damaged or not a localize label state; "
                         "start a new run with another --out")
    _check_same(out, doc, identity)
    lost = damaged(out, doc.get("outputs"))
    if lost:
        raise InputError(f"--resume {out}: {lost[0]} is damaged or missing (its SHA-256 does not match "
                         f"{STATE_FILE}); restore it, or start a new run with another --out")
    return Resumed(PoolState.from_dict(doc["pool"]), doc["history"]), bool(doc.get("finished"))


def _check_same(out: Path, doc: dict, identity: dict) -> None:
    for what, digest in identity["inputs"].items():
        if doc.get("inputs", {}).get(what) != digest:
            raise InputError(f"--resume {out}: the {what} differ from the saved run's; resume with the same "
                             "inputs, or start a new run with another --out")
    saved, now = _flat(doc.get("settings", {})), _flat(json.loads(json.dumps(identity["settings"])))
    changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if changed:
        k = changed[0]
        more = f" (and {len(changed) - 1} more setting(s))" if len(changed) > 1 else ""
        raise InputError(f"--resume {out}: the saved run has {k} {brief(saved.get(k))}, not {brief(now.get(k))}"
                         f"{more}; resume without changing settings, or start a new run with another --out")


def _flat(d: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _plain(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
