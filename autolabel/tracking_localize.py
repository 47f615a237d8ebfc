"""MLflow tracking of `autolabel localize label`, as the classification loop's (autolabel.tracking):
one parent run per labelling run, one nested child run per trial (`trial-<i>`).

    parent  params: the resolved config flattened (`training.head_epochs`, ...), threshold,
                    n_trials, model, and resumed_from (the parent of the run a --resume continues)
            metrics: each trial's numbers with step = trial; final_* at the end
            artifacts: dataset.csv, metrics.json, model/
    child   params: the same plus `trial`
            metrics: the trial's epochs (train_loss, val_loss, val_accuracy, val_mean_iou, lr;
                     step = epoch) and its numbers (accepted, accepted_total, n_train, audit)
            artifacts: trials/trial_NN.csv

Tracking never stops the loop (autolabel.tracking_client): the first MLflow error is one warning
and tracking is off for the rest of the run.
"""
from __future__ import annotations

from pathlib import Path

from autolabel.tracking_client import TrackingClient, finite, flatten
from autolabel.tracking_store import DEFAULT_EXPERIMENT

EPOCH_KEYS = ("train_loss", "val_loss", "val_accuracy", "val_mean_iou", "lr")


def trial_numbers(record: dict) -> dict[str, float]:
    """A trial record as flat numbers (the best epoch's validation as best_*)."""
    out = {k: record.get(k) for k in ("n_train", "accepted", "accepted_total", "pool", "n_audited",
                                      "class_precision", "mean_iou")}
    best = record.get("best_epoch") or {}
    out.update({f"best_{k}": best.get(k) for k in ("val_mean_iou", "val_accuracy", "epoch")})
    return finite(out)


class LocalizeTracker(TrackingClient):
    """Trial callback (`__call__(record, outcome)`) for localization.labeling.label_pool; put it
    after the LabelsetWriter so the trial's CSV exists. `start` first, then `finish` or `fail`."""

    def __init__(self, out: str | Path, tracking_uri: str | None = None, experiment: str | None = DEFAULT_EXPERIMENT):
        super().__init__(tracking_uri, experiment)
        self.out = Path(out)
        self._params: dict[str, str] = {}

    def start(self, config: dict, params: dict) -> "LocalizeTracker":
        def _start():
            self._params = {**flatten(config), **{k: str(v) for k, v in params.items()}}
            tags = {"autolabel.out": str(self.out.resolve()), "autolabel.command": "localize label"}
            self.run_id = self.open_run(self.out.name, self._params, tags)
        self.safely(_start)
        return self

    def __call__(self, record: dict, outcome) -> None:
        self.safely(self._trial, record, outcome)

    def finish(self, metrics: dict) -> None:
        self.safely(self._finish, metrics)

    def fail(self, status: str = "FAILED") -> None:
        self.safely(self.close_all, status)

    def _trial(self, record: dict, outcome) -> None:
        trial = record["trial"]
        tags = {"mlflow.parentRunId": self.run_id, "mlflow.source.type": None}
        child = self.open_run(f"trial-{trial}", {**self._params, "trial": str(trial)}, tags)
        epochs = outcome.trained.result.history
        self.log_series(child, {k: [e.get(k) for e in epochs] for k in EPOCH_KEYS})
        numbers = trial_numbers(record)
        self.log_metrics(child, numbers, trial)
        self.log_metrics(self.run_id, numbers, trial)
        self.client.set_tag(child, "stop", str(record.get("stop")))
        self.log_files(child, [self.out / "trials" / f"trial_{trial:02d}.csv"], "trials")
        self.close(child)

    def _finish(self, metrics: dict) -> None:
        final = metrics.get("final", {})
        self.log_metrics(self.run_id, {f"final_{k}": v for k, v in final.items()}, final.get("trials_run") or 0)
        self.client.set_tag(self.run_id, "stop", str(final.get("stop")))
        self.log_files(self.run_id, [self.out / "dataset.csv", self.out / "metrics.json"])
        self.log_files(self.run_id, [self.out / "model"], "model")
        self.close(self.run_id)
