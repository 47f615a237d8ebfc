"""What `autolabel localize label` leaves in its output folder:

    dataset.csv   path,label,x0,y0,x1,y1,source,confidence,trial: the human rows (confidence 1,
                  trial 0; empty box cells for a label without a box), then the accepted pool
                  images (source pseudo; the class confidence, the trial that accepted them)
    metrics.json  the threshold, the config, one record per trial (with --truth: class precision
                  and mean IoU of the accepted boxes), skipped files, the totals
    model/        the last trial's checkpoint (see checkpoint.py)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from classification.fileio import write_csv, write_json
from localization.checkpoint import save_localizer
from localization.config import LocalizeConfig
from localization.data import BOX_COLUMNS, BoxSet
from localization.labeling import Labeled, LabelSpec

COLUMNS = ["path", "label", *BOX_COLUMNS, "source", "confidence", "trial"]


def dataset_frame(human: BoxSet, pool: BoxSet, labeled: Labeled) -> pd.DataFrame:
    classes = np.array(labeled.trained.classes, dtype=object)
    state, acc = labeled.state, np.flatnonzero(labeled.state.accepted)
    rows = [_rows(human.images.paths, classes[human.images.labels], human.boxes, "human", np.ones(len(human)),
                  np.zeros(len(human), np.int64)),
            _rows([pool.images.paths[i] for i in acc], classes[state.labels[acc]], state.boxes[acc], "pseudo",
                  state.confidence[acc].round(6), state.trial[acc])]
    return pd.concat(rows, ignore_index=True)[COLUMNS]


def _rows(paths, labels, boxes, source: str, confidence, trial) -> pd.DataFrame:
    frame = pd.DataFrame({"path": list(paths), "label": list(labels)})
    for j, name in enumerate(BOX_COLUMNS):
        frame[name] = np.round(boxes[:, j], 2) if len(boxes) else []
    return frame.assign(source=source, confidence=confidence, trial=trial)


def write_labelset(out: str | Path, human: BoxSet, pool: BoxSet, labeled: Labeled, spec: LabelSpec,
                   cfg: LocalizeConfig) -> dict:
    """Write dataset.csv, metrics.json and model/ into `out`; return the metrics."""
    out = Path(out)
    save_localizer(out / "model", labeled.trained)
    write_csv(out / "dataset.csv", dataset_frame(human, pool, labeled))
    last = labeled.history[-1]
    metrics = {"threshold": spec.threshold, "n_trials": spec.n_trials, "version": cfg.version,
               "config": cfg.to_dict(), "trials": labeled.history,
               "final": {"n_human": len(human), "n_pool": len(pool), "n_accepted": int(labeled.state.accepted.sum()),
                         "trials_run": len(labeled.history),
                         **{k: last[k] for k in ("n_audited", "class_precision", "mean_iou") if k in last}},
               "skipped": [{"path": p, "reason": r} for p, r in human.skipped + pool.skipped]}
    write_json(out / "metrics.json", metrics)
    return metrics
