"""What a run leaves in its output folder, written atomically as the loop goes.

    dataset.csv          path,label,source(human|human-reviewed|pseudo),confidence,trial,ood_score: the labelled dataset
    trials/trial_NN.csv  every pool image's prediction, confidence, threshold, ood score and decision
    metrics.json         per-trial records (+ audit with --truth), final test accuracy, stop reason,
                         estimated precision (overall and per class) per trial and final
    state.json           everything `--resume` needs after the last completed trial (autolabel.resume);
                         written last in each trial: it is the trial's commit point. It records the
                         SHA-256 of the files above ("outputs") and of its own content ("digest")
    checkpoint/          the final classifier (see classification.checkpoint)
    config.yaml          the resolved configuration
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from autolabel import hooks
from autolabel.audit import audit
from autolabel.state import LoopState
from classification.checkpoint import save_checkpoint
from classification.digest import file_digest, sealed
from classification.fileio import write_csv, write_json, write_text
from classification.train.rotation import rotation_summary

CHECKPOINT = "checkpoint/model.pt"


class RunWriter:
    """A trial callback for `PseudoLabeler` that keeps the output folder current from the
    loop's `LoopState`.

    `run_info` (for example the MLflow run id) is saved in state.json for `--resume`;
    `write_config=False` leaves a resumed run's config.yaml as it is. `outputs` are the digests a
    resumed run's state.json recorded, kept for the files it does not write again.
    """

    def __init__(self, out: str | Path, config: dict, truth: np.ndarray | None = None,
                 run_info: dict | None = None, write_config: bool = True, outputs: dict | None = None):
        self.out, self.truth, self.config, self.run_info = Path(out), truth, config, dict(run_info or {})
        self.outputs = dict(outputs or {})  # file (relative to `out`) -> SHA-256 as written
        if write_config:
            write_text(self.out / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def __call__(self, record: dict, state: LoopState) -> None:
        if self.truth is not None:
            record["audit"] = audit(state.labels, self.truth, state.data.classes)
        self._written(write_csv, f"trials/trial_{record['trial']:02d}.csv", trial_frame(state))
        self._written(write_csv, "dataset.csv", dataset_frame(state))
        self._written(write_json, "metrics.json", self._metrics(state))
        hooks.reached("commit", record["trial"])
        self.commit(state)

    def commit(self, state: LoopState, finished: bool = False) -> None:
        """Write state.json: after it, the trial (or with `finished`, the whole run) is done."""
        saved = {**state.to_json(finished, **self.run_info), "outputs": dict(sorted(self.outputs.items()))}
        write_json(self.out / "state.json", sealed(saved))

    def finish(self, state: LoopState) -> dict:
        """After the final fit: the checkpoint, the final dataset.csv and metrics.json."""
        model = state.model
        save_checkpoint(self.out / "checkpoint", model.model, state.data.classes, model.cfg, model.data_cfg)
        self.outputs[CHECKPOINT] = file_digest(self.out / CHECKPOINT)
        self._written(write_csv, "dataset.csv", dataset_frame(state))
        metrics = self._metrics(state)
        self._written(write_json, "metrics.json", metrics)
        return metrics

    def _written(self, write, name: str, content) -> None:
        """Write `content` to `name` (under the run folder) and note its digest for state.json."""
        write(self.out / name, content)
        self.outputs[name] = file_digest(self.out / name)

    def _metrics(self, state: LoopState) -> dict:
        refused = state.columns.get("ood_refused")
        final = {"termination_reason": state.termination_reason, "n_trials": state.n_trials,
                 "pseudo_labels": int((state.labels >= 0).sum()), "pool": len(state.data.pool),
                 "human_labels": len(state.data.labeled), "refused_ood": int(refused.sum()) if refused is not None else 0,
                 "ood_guard": state.guards.get("ood", {}).get("summary")}
        final["estimated_precision"], final["estimated_precision_per_class"] = state.estimated_precision()
        if state.model is not None:  # the final fit is done
            final["test_accuracy"] = state.test_accuracy
            final.update(rotation_summary(state.model.best))  # aux_rotation's head, if trained with it
        if self.truth is not None:
            final["audit"] = audit(state.labels, self.truth, state.data.classes)
        return {"trials": state.history, "final": final}


def trial_frame(state: LoopState) -> pd.DataFrame:
    """Every pool image's prediction, confidence, threshold, guard columns and decision."""
    p, classes = state.prediction, np.array(state.data.classes)
    return pd.DataFrame({"path": state.data.pool.paths,
                         "prediction": np.where(p.ok, classes[p.guess], ""),
                         "confidence": p.confidence, "threshold": p.threshold,
                         "ood_score": state.columns["ood_score"].round(6), "ood_refused": state.columns["ood_refused"],
                         "accepted": p.accepted, "label": _names(state.labels, classes)})


def dataset_frame(state: LoopState) -> pd.DataFrame:
    """Human labels first (confidence 1, trial 0), then pool images a person reviewed and gave a
    class (source human-reviewed, trial = the first trial that trained on them), then the accepted
    pseudo-labels."""
    lb, pool, classes = state.data.labeled, state.data.pool, np.array(state.data.classes)
    acc = state.accepted
    human = pd.DataFrame({"path": lb.paths, "label": classes[lb.labels], "source": "human",
                          "confidence": 1.0, "trial": 0, "ood_score": np.nan})
    pseudo = pd.DataFrame({"path": [pool.paths[i] for i in acc], "label": classes[state.labels[acc]],
                           "source": "pseudo", "confidence": state.confidence[acc].round(6),
                           "trial": state.accepted_trial[acc], "ood_score": state.columns["ood_score"][acc].round(6)})
    reviewed = state.columns.get("reviewed_label", np.zeros(0, np.int64))
    rev = np.flatnonzero(reviewed >= 0)
    by_person = pd.DataFrame({"path": [pool.paths[i] for i in rev], "label": classes[reviewed[rev]],
                              "source": "human-reviewed", "confidence": 1.0,
                              "trial": state.columns.get("reviewed_since", reviewed)[rev],
                              "ood_score": state.columns["ood_score"][rev].round(6)})
    return pd.concat([human, by_person, pseudo] if len(rev) else [human, pseudo], ignore_index=True)


def _names(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.where(labels >= 0, classes[np.maximum(labels, 0)], "")
