"""What `autolabel localize label` leaves in its output folder, written after every trial:

    trials/trial_NN.csv  every pool image as trial NN saw it: path, label, x0,y0,x1,y1 (the merged
                  views' box), confidence, agreement (IoU of the plain and mirrored views' boxes),
                  decision (accepted: new this trial; accepted_before; rejected; unreadable)
    dataset.csv   path,label,x0,y0,x1,y1,source,confidence,trial: the human rows (confidence 1,
                  trial 0; empty box cells for a label without a box), then the accepted pool
                  images (source pseudo; the class confidence, the trial that accepted them)
    metrics.json  the threshold, the config, one record per trial (with --truth: class precision
                  and mean IoU of the accepted boxes), skipped files, the totals
    model/        the latest trial's checkpoint (see checkpoint.py)
    state.json    the commit point, written last (see labelstate.py)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from classification.fileio import write_csv, write_json
from localization.checkpoint import save_localizer
from localization.config import LocalizeConfig
from localization.data import BOX_COLUMNS, BoxSet
from localization.labeling import LabelSpec, PoolState, TrialOutcome
from localization.labelstate import save_state, trial_csv_name, trial_outputs

COLUMNS = ["path", "label", *BOX_COLUMNS, "source", "confidence", "trial"]
TRIAL_COLUMNS = ["path", "label", *BOX_COLUMNS, "confidence", "agreement", "decision"]


def dataset_frame(human: BoxSet, pool: BoxSet, state: PoolState) -> pd.DataFrame:
    classes = np.array(human.images.classes, dtype=object)
    acc = np.flatnonzero(state.accepted)
    rows = [_rows(human.images.paths, classes[human.images.labels], human.boxes, "human", np.ones(len(human)),
                  np.zeros(len(human), np.int64)),
            _rows([pool.images.paths[i] for i in acc], classes[state.labels[acc]], state.boxes[acc], "pseudo",
                  state.confidence[acc].round(6), state.trial[acc])]
    return pd.concat(rows, ignore_index=True)[COLUMNS]


def trial_frame(pool: BoxSet, classes: list[str], outcome: TrialOutcome) -> pd.DataFrame:
    """Every pool image's prediction in this trial and what became of it."""
    prop, state = outcome.proposal, outcome.state
    readable = ~np.isnan(prop.boxes).any(axis=1)
    decision = np.where(outcome.new, "accepted", np.where(state.accepted, "accepted_before", "rejected"))
    decision = np.where(readable, decision, "unreadable")
    frame = _rows(pool.images.paths, np.array(classes, dtype=object)[prop.labels], prop.boxes, "", 0, 0)
    return frame.assign(confidence=prop.confidence.round(6), agreement=prop.agreement.round(6),
                        decision=decision)[TRIAL_COLUMNS]


def _rows(paths, labels, boxes, source: str, confidence, trial) -> pd.DataFrame:
    frame = pd.DataFrame({"path": list(paths), "label": list(labels)})
    for j, name in enumerate(BOX_COLUMNS):
        frame[name] = np.round(boxes[:, j], 2) if len(boxes) else []
    return frame.assign(source=source, confidence=confidence, trial=trial)


def label_metrics(human: BoxSet, pool: BoxSet, state: PoolState, history: list[dict], spec: LabelSpec,
                  cfg: LocalizeConfig) -> dict:
    last = history[-1] if history else {}
    return {"threshold": spec.threshold, "n_trials": spec.n_trials, "version": cfg.version, "config": cfg.to_dict(),
            "trials": history,
            "final": {"n_human": len(human), "n_pool": len(pool), "n_accepted": int(state.accepted.sum()),
                      "trials_run": len(history), "stop": last.get("stop"),
                      **{k: last[k] for k in ("n_audited", "class_precision", "mean_iou") if k in last}},
            "skipped": [{"path": p, "reason": r} for p, r in human.skipped + pool.skipped]}


class LabelsetWriter:
    """The loop's first trial callback: after each trial, its CSV, the model, dataset.csv,
    metrics.json, then state.json (the commit point), all written atomically."""

    def __init__(self, out: str | Path, human: BoxSet, pool: BoxSet, spec: LabelSpec, cfg: LocalizeConfig,
                 identity: dict, history: list[dict] | None = None):
        self.out, self.human, self.pool, self.spec, self.cfg = Path(out), human, pool, spec, cfg
        self.identity, self.history = identity, list(history or [])
        self.metrics: dict = {}

    def __call__(self, record: dict, outcome: TrialOutcome) -> None:
        self.history.append(record)
        write_csv(self.out / trial_csv_name(outcome.trial), trial_frame(self.pool, self.human.images.classes, outcome))
        save_localizer(self.out / "model", outcome.trained)
        self.commit(outcome.state, finished=record.get("stop") is not None)

    def commit(self, state: PoolState, finished: bool) -> dict:
        """dataset.csv and metrics.json for the trials so far, then state.json; returns the metrics."""
        write_csv(self.out / "dataset.csv", dataset_frame(self.human, self.pool, state))
        self.metrics = label_metrics(self.human, self.pool, state, self.history, self.spec, self.cfg)
        write_json(self.out / "metrics.json", self.metrics)
        save_state(self.out, self.identity, self.history, state, trial_outputs(self.out, self.history), finished)
        return self.metrics
