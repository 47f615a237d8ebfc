"""What a run leaves in its output folder, written atomically as the loop goes.

    dataset.csv          path,label,source(human|pseudo),confidence,trial,ood_score: the labelled dataset
    trials/trial_NN.csv  every pool image's prediction, confidence, threshold, ood score and decision
    metrics.json         per-trial records (+ audit with --truth), final test accuracy, stop reason
    state.json           everything `--resume` needs after the last completed trial (autolabel.resume);
                         written last in each trial: it is the trial's commit point
    checkpoint/          the final classifier (see classification.checkpoint)
    config.yaml          the resolved configuration
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from autolabel.audit import audit
from autolabel.resume import crash_point, run_state
from classification.checkpoint import save_checkpoint
from classification.fileio import write_csv, write_json, write_text


class RunWriter:
    """A trial callback for `PseudoLabeler` that keeps the output folder current.

    `run_info` (for example the MLflow run id) is saved in state.json for `--resume`;
    `write_config=False` leaves a resumed run's config.yaml as it is.
    """

    def __init__(self, out: str | Path, config: dict, truth: np.ndarray | None = None,
                 run_info: dict | None = None, write_config: bool = True):
        self.out, self.truth, self.config, self.run_info = Path(out), truth, config, dict(run_info or {})
        if write_config:
            write_text(self.out / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def __call__(self, record: dict, labeler) -> None:
        if self.truth is not None:
            record["audit"] = audit(labeler.pseudo_labels_, self.truth, labeler.classes_)
        write_csv(self.out / "trials" / f"trial_{record['trial']:02d}.csv", self._trial_frame(labeler))
        write_csv(self.out / "dataset.csv", dataset_frame(labeler))
        write_json(self.out / "metrics.json", self._metrics(labeler))
        crash_point("commit", record["trial"])
        self.commit(labeler)

    def commit(self, labeler, finished: bool = False) -> None:
        """Write state.json: after it, the trial (or with `finished`, the whole run) is done."""
        write_json(self.out / "state.json", run_state(labeler, finished=finished, **self.run_info))

    def finish(self, labeler) -> dict:
        model = labeler.model_
        save_checkpoint(self.out / "checkpoint", model.model, labeler.classes_, labeler.train, model.data_cfg)
        write_csv(self.out / "dataset.csv", dataset_frame(labeler))
        metrics = self._metrics(labeler)
        write_json(self.out / "metrics.json", metrics)
        return metrics

    def _metrics(self, labeler) -> dict:
        final = {"termination_reason": labeler.termination_reason_, "n_trials": labeler.n_trials_,
                 "pseudo_labels": int((labeler.pseudo_labels_ >= 0).sum()), "pool": len(labeler.unlabeled_),
                 "human_labels": len(labeler.labeled_), "refused_ood": int(labeler.ood_refused_.sum()),
                 "ood_guard": labeler.ood_.state_dict() if labeler.ood_ else None}
        if hasattr(labeler, "test_accuracy_"):
            final["test_accuracy"] = labeler.test_accuracy_
        if self.truth is not None:
            final["audit"] = audit(labeler.pseudo_labels_, self.truth, labeler.classes_)
        return {"trials": labeler.history_, "final": final}

    @staticmethod
    def _trial_frame(labeler) -> pd.DataFrame:
        p, classes = labeler.trial_prediction_, np.array(labeler.classes_)
        return pd.DataFrame({"path": labeler.unlabeled_.paths,
                             "prediction": np.where(p["ok"], classes[p["guess"]], ""),
                             "confidence": p["confidence"], "threshold": p["threshold"],
                             "ood_score": labeler.ood_score_.round(6), "ood_refused": labeler.ood_refused_,
                             "accepted": p["accepted"], "label": _names(labeler.pseudo_labels_, classes)})


def dataset_frame(labeler) -> pd.DataFrame:
    """Human labels first (confidence 1, trial 0), then the accepted pseudo-labels."""
    lb, pool, classes = labeler.labeled_, labeler.unlabeled_, np.array(labeler.classes_)
    acc = np.flatnonzero(labeler.pseudo_labels_ >= 0)
    human = pd.DataFrame({"path": lb.paths, "label": classes[lb.labels], "source": "human",
                          "confidence": 1.0, "trial": 0, "ood_score": np.nan})
    pseudo = pd.DataFrame({"path": [pool.paths[i] for i in acc], "label": classes[labeler.pseudo_labels_[acc]],
                           "source": "pseudo", "confidence": labeler.confidence_[acc].round(6),
                           "trial": labeler.accepted_trial_[acc], "ood_score": labeler.ood_score_[acc].round(6)})
    return pd.concat([human, pseudo], ignore_index=True)


def _names(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.where(labels >= 0, classes[np.maximum(labels, 0)], "")
