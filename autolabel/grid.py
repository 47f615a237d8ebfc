"""A grid of settings for the loop: every combination of a few values per setting runs the
normal loop into its own folder, and the outcomes are ranked by one metric.

    spec    "threshold=0.7,0.9"   -> GridParam("loop", "threshold", (0.7, 0.9), ("0.7", "0.9"))
    combo   threshold=0.7,policy=fixed -> folder <out>/1_threshold=0.7_policy=fixed/

Every combination uses the same feature cache. Features are keyed by image content, model,
weights, transform and view, so only the first combination pays for backbone passes; the others
train heads on cached features and predict from them (unless a parameter changes the features
themselves, e.g. img_size or model).
"""
from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from autolabel.config import LoopConfig
from autolabel.run import RunInputs, run_loop
from autolabel.state import LoopState
from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.errors import InputError
from classification.fileio import write_csv

_logger = logging.getLogger(__name__)

SECTIONS = {"loop": LoopConfig, "train": TrainConfig}
METRICS = ("test_accuracy", "precision", "val_macro_f1")
OUTCOME = ("test_accuracy", "precision", "val_macro_f1", "val_accuracy", "coverage", "accepted",
           "refused_ood", "trials", "stop")
TRUE, FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


@dataclass(frozen=True)
class GridParam:
    section: str                # "loop" or "train": the config the field belongs to
    name: str                   # the field's name, also its short name in folders and MLflow
    values: tuple               # parsed to the field's type
    texts: tuple[str, ...]      # as the user wrote them (folder and run names)


@dataclass(frozen=True)
class Combination:
    index: int                                  # 1-based, in grid order
    settings: tuple[tuple[GridParam, int], ...]  # (param, index into its values)

    @property
    def name(self) -> str:
        """`threshold=0.7,policy=fixed`: the MLflow run name."""
        return ",".join(f"{p.name}={p.texts[i]}" for p, i in self.settings)

    def folder(self, width: int = 1) -> str:
        parts = "_".join(f"{p.name}={p.texts[i]}" for p, i in self.settings)
        return f"{self.index:0{width}d}_" + re.sub(r"[^\w.=+-]", "_", parts)

    def params(self) -> dict[str, Any]:
        """{"threshold": 0.7, "policy": "fixed"}: short name -> parsed value."""
        return {p.name: p.values[i] for p, i in self.settings}

    def configs(self, train: TrainConfig, loop: LoopConfig) -> tuple[TrainConfig, LoopConfig]:
        changes = {"train": {}, "loop": {}}
        for p, i in self.settings:
            changes[p.section][p.name] = p.values[i]
        return replace(train, **changes["train"]), replace(loop, **changes["loop"])


def parse_param(spec: str) -> GridParam:
    """`key=v1,v2` with key a LoopConfig or TrainConfig field, bare or qualified (`train.lr`)."""
    key, sep, text = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--param {spec!r}: expected key=value1,value2,... (for example threshold=0.7,0.9)")
    section, name = _field(key)
    texts = tuple(t.strip() for t in text.split(","))
    if not all(texts):
        raise InputError(f"--param {key}: give comma-separated values, for example {key}=0.7,0.9; got {text!r}")
    annotation = {f.name: f.type for f in fields(SECTIONS[section])}[name]
    values = tuple(_parse_value(key, t, str(annotation)) for t in texts)
    if len(set(map(repr, values))) < len(values):
        raise InputError(f"--param {key}: a value is given twice in {text!r}")
    return GridParam(section, name, values, texts)


def expand(specs: list[str], train: TrainConfig, loop: LoopConfig) -> list[Combination]:
    """Every combination of the `--param` specs, each checked by constructing its configs."""
    if not specs:
        raise InputError("give at least one --param key=value1,value2")
    params = [parse_param(s) for s in specs]
    names = [p.name for p in params]
    if len(set(names)) < len(names):
        raise InputError(f"--param: each setting once, got {', '.join(names)}")
    for p in params:  # one value at a time, so a config's error names the value at fault
        for value, text in zip(p.values, p.texts):
            _check(p, value, text, train, loop)
    grid = itertools.product(*[range(len(p.values)) for p in params])
    combos = [Combination(k, tuple(zip(params, idx))) for k, idx in enumerate(grid, start=1)]
    for c in combos:
        c.configs(train, loop)
    return combos


def _field(key: str) -> tuple[str, str]:
    section, _, name = key.rpartition(".")
    valid = {s: sorted(f.name for f in fields(cls)) for s, cls in SECTIONS.items()}
    if section:
        if section in valid and name in valid[section]:
            return section, name
        listed = valid.get(section, sorted(valid["loop"] + valid["train"]))
        raise InputError(f"--param: unknown key {key!r}; valid: {', '.join(listed)}")
    found = [s for s in SECTIONS if name in valid[s]]
    if len(found) != 1:
        what = "ambiguous" if found else "unknown"
        raise InputError(f"--param: {what} key {key!r}; valid: {', '.join(sorted(valid['loop'] + valid['train']))}"
                         + (f" (or qualified: {', '.join(f'{s}.{name}' for s in found)})" if found else ""))
    return found[0], name


def _parse_value(key: str, text: str, annotation: str) -> Any:
    kinds = [k.strip() for k in annotation.split("|")]
    if "None" in kinds and text.lower() in ("none", "null"):
        return None
    if "bool" in kinds and text.lower() in TRUE | FALSE:
        return text.lower() in TRUE
    for kind, parse in (("int", int), ("float", float)):
        if kind in kinds:
            try:
                return parse(text)
            except ValueError:
                pass
    if "str" in kinds:
        return text
    wanted = " or ".join(k if k != "None" else "none" for k in kinds)
    raise InputError(f"--param {key}: {text!r} is not a valid {wanted}")


def _check(p: GridParam, value, text: str, train: TrainConfig, loop: LoopConfig) -> None:
    try:
        if p.section == "train":
            replace(train, **{p.name: value})
        else:
            replace(loop, **{p.name: value})
    except InputError as e:
        raise InputError(f"--param {p.name}={text}: {e}") from None


@dataclass(frozen=True)
class GridJob:
    """A grid to run: every combination of the base settings, on the same images."""
    combos: list[Combination]
    train: TrainConfig          # the base settings each combination changes
    loop: LoopConfig
    inputs: RunInputs           # the images every combination shares
    out: Path                   # each combination runs into out/<its folder>
    metric: str                 # ranks the combinations


def run_grid(job: GridJob, cache: FeatureCache, tracker=None, progress: bool = False,
             announce: Callable[[Combination, Path], None] | None = None) -> list[dict]:
    """Run every combination into `job.out/<folder>`; returns the rows ranked by `job.metric`.

    `tracker` (optional) has begin(combo, resolved, folder), the trial callback, end(row, folder)
    and fail(status): see autolabel.tracking_tools.GridTracker. grid.csv is rewritten after every
    combination, so an interrupted grid keeps the results it has.
    """
    width = len(str(len(job.combos)))
    rows = []
    for combo in job.combos:
        folder = job.out / combo.folder(width)
        if announce:
            announce(combo, folder)
        train, loop = combo.configs(job.train, job.loop)
        rows.append(_run_one(combo, (train, loop), job.inputs, folder, cache, tracker, progress))
        write_grid_csv(job.out / "grid.csv", rank(rows, job.metric))
    return rank(rows, job.metric)


def _run_one(combo: Combination, configs: tuple[TrainConfig, LoopConfig], inputs: RunInputs, folder: Path,
             cache: FeatureCache, tracker, progress: bool) -> dict:
    train, loop = configs
    resolved = {"train": train.to_dict(), "loop": loop.to_dict(), "data": inputs.data,
                "grid": combo.params()}
    if tracker:
        tracker.begin(combo, resolved, folder)
    result = run_loop(resolved, inputs, folder, cache, tracker=tracker, progress=progress)
    row = {"index": combo.index, "combination": combo.name, **combo.params(),
           **outcome(result.state, result.metrics), "folder": str(folder)}
    _logger.info("%s: %s", combo.name, ", ".join(f"{k} {row[k]:.3f}" for k in METRICS if row.get(k) is not None))
    if tracker:
        tracker.end(row, folder)
    return row


def outcome(state: LoopState, metrics: dict) -> dict:
    """The final numbers of one run (None where they need a test split or pool truth)."""
    final, best = metrics["final"], state.model.best
    return {"test_accuracy": final.get("test_accuracy"),
            "precision": final.get("audit", {}).get("precision"),
            "val_macro_f1": best.get("val_macro_f1"), "val_accuracy": best.get("val_accuracy"),
            "coverage": final["pseudo_labels"] / max(final["pool"], 1), "accepted": final["pseudo_labels"],
            "refused_ood": final["refused_ood"], "trials": final["n_trials"], "stop": final["termination_reason"]}


def rank(rows: list[dict], metric: str) -> list[dict]:
    """Best first by `metric`; rows without it (None or NaN) last, in grid order; adds `rank`."""
    def key(row):
        value = row.get(metric)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return (missing, 0.0 if missing else -value, row["index"])

    return [{"rank": r, **row} for r, row in enumerate(sorted(rows, key=key), start=1)]


def write_grid_csv(path: Path, ranked: list[dict]) -> None:
    columns = ["rank", "index", "combination"]
    write_csv(path, pd.DataFrame(ranked)[columns + [c for c in ranked[0] if c not in columns]])
