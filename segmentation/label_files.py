"""What the pseudo-mask loop writes in its output folder, and how `--resume` reads it back.

    masks/<stem>.png   accepted pseudo-masks: class indices at the image's own size, IGNORE (255)
                       where the model was unsure
    dataset.csv        path,mask,source,confidence,trial: the human pairs (trial 0) and every
                       accepted pseudo-mask (the trial that accepted it)
    metrics.json       one record per completed trial
    state.json         the settings and inputs the run started with, the last completed trial and
                       what was accepted; written last in a trial, so it names only finished work

Every file is written atomically (classification.fileio): a killed run leaves the previous
version, never half of one.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from classification.errors import InputError, first_line
from classification.fileio import write_csv, write_json

STATE_VERSION = 1
COLUMNS = ["path", "mask", "source", "confidence", "trial"]
# settings a resumed run may change: more trials, and where and how fast it computes
RESUMABLE = ("n_trials", "train.device", "train.threads", "train.workers", "train.runtime")


def mask_path(out: Path, stem: str) -> Path:
    return Path(out) / "masks" / f"{stem}.png"


def write_dataset(out: Path, human: list[tuple[str, str]], accepted: dict[str, dict]) -> pd.DataFrame:
    """dataset.csv: the human pairs, then the accepted pseudo-masks in stem order."""
    rows = [{"path": img, "mask": mask, "source": "human", "confidence": None, "trial": 0}
            for img, mask in human]
    rows += [{"path": a["path"], "mask": a["mask"], "source": "pseudo",
              "confidence": round(a["confidence"], 6), "trial": a["trial"]}
             for _, a in sorted(accepted.items())]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(Path(out) / "dataset.csv", frame)
    return frame


def write_metrics(out: Path, header: dict, records: list[dict]) -> None:
    write_json(Path(out) / "metrics.json", {**header, "trials": records})


def write_state(out: Path, settings: dict, trial: int, accepted: dict[str, dict],
                records: list[dict], finished: bool = False) -> None:
    write_json(Path(out) / "state.json", {"version": STATE_VERSION, "settings": settings, "trial": trial,
                                          "finished": finished, "accepted": accepted, "records": records})


def read_state(out: Path) -> dict | None:
    """The saved state, or None when the folder holds no run yet."""
    path = Path(out) / "state.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        ok = state.get("version") == STATE_VERSION and isinstance(state.get("accepted"), dict)
    except (OSError, ValueError, AttributeError) as e:
        raise InputError(f"{path} is unreadable ({first_line(e)}); start a new run with another --out") from None
    if not ok:
        raise InputError(f"{path} is not a pseudo-mask run state (version {STATE_VERSION}); "
                         "start a new run with another --out")
    return state


def check_resumable(out: Path, saved: dict, settings: dict) -> None:
    """Refuse, in one line, a resume whose inputs or settings differ from the saved run's."""
    old = saved.get("settings", {})
    changed = sorted(k for k in set(old) | set(settings)
                     if k not in RESUMABLE and old.get(k) != settings.get(k))
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise InputError(f"--resume {out}: {_describe(changed[0], old, settings)}{more}; resume with the "
                         "same inputs and settings, or start a new run with another --out")
    missing = [a["mask"] for a in saved["accepted"].values() if not Path(a["mask"]).is_file()]
    if missing:
        raise InputError(f"--resume {out}: accepted pseudo-mask {missing[0]} is missing; "
                         "start a new run with another --out")


def _describe(key: str, old: dict, new: dict) -> str:
    if key in ("human", "pool"):
        return f"the {key} images differ from the saved run's"
    return f"the saved run has {key}={old.get(key)!r}, this one {new.get(key)!r}"


def refuse_existing(out: Path) -> None:
    """A new run never writes over another's files."""
    if (Path(out) / "state.json").is_file():
        raise InputError(f"{out} already holds a pseudo-mask run; continue it with --resume, "
                         "or use another --out")
