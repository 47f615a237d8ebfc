"""MLflow tracking of the autolabel loop: one parent run per `autolabel` run, one nested child run
per trial (`trial-<i>`, tag `mlflow.parentRunId`).

    parent  params: the resolved config flattened (`train.lr`, `loop.threshold`, ...) plus
                    `threshold`, `policy`, `mode`, `model`
            metrics: every trial's numbers with step=trial; the final fit's epochs (`final_*`)
            artifacts: config.yaml, dataset.csv, metrics.json, the pictures, checkpoint/
    child   params: the same plus `trial` (so the compare page can plot across trials)
            metrics: the trial's epochs (train_loss, val_loss, ..., step = epoch) and its numbers
            artifacts: trials/trial_NN.csv

Tracking never stops the loop: the first MLflow error is logged as one warning and tracking is
off for the rest of the run, while the local outputs are written as always (the rules of
autolabel.tracking_client, which this tracker builds on).
"""
from __future__ import annotations

from pathlib import Path

import yaml

from autolabel.tracking_client import TrackingClient, finite, flatten
from autolabel.tracking_store import DEFAULT_EXPERIMENT

PICTURES = ("confusion_matrix.png", "rotation_confusion.png", "gallery.png", "thresholds.png")


def short_params(config: dict) -> dict[str, str]:
    """The handful of settings users compare trials and runs by, under short names."""
    train, loop = config.get("train", {}), config.get("loop", {})
    return {"threshold": str(loop.get("threshold")), "policy": str(loop.get("policy")),
            "mode": str(train.get("mode")), "model": str(train.get("model"))}


def trial_metrics(record: dict) -> dict[str, float]:
    """A trial record as flat numbers: counts, thresholds per class, validation, test, calibration
    (temperature, estimated precision overall and per class), audit."""
    out = {k: record.get(k) for k in ("accepted", "coverage", "newly_accepted", "dropped", "refused_ood",
                                      "mean_confidence", "train_size", "skipped", "test_accuracy",
                                      "temperature", "cv_accuracy", "estimated_precision")}
    out["best_val_accuracy"], out["best_val_macro_f1"] = record.get("val_accuracy"), record.get("val_macro_f1")
    out.update({f"threshold_{c}": t for c, t in record.get("thresholds", {}).items()})
    out.update({f"estimated_precision_{c}": p
                for c, p in record.get("estimated_precision_per_class", {}).items() if p is not None})
    audit = record.get("audit")
    if audit:
        out.update(precision=audit["precision"], audit_coverage=audit["coverage"], correct=audit["correct"])
        for c, s in audit["per_class"].items():
            out[f"precision_{c}"], out[f"audit_coverage_{c}"] = s["precision"], s["coverage"]
    return finite(out)


class MlflowTracker(TrackingClient):
    """Trial callback (`__call__(record, state)`) and epoch callback (`on_epoch(record)`) for
    `PseudoLabeler`; put it after `RunWriter` so records carry the audit and the trial CSV exists.

    Call `start(config)` before the loop, then `finish(state, out_dir)` or `fail()`.
    """

    def __init__(self, out: str | Path, tracking_uri: str | None = None,
                 experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None):
        super().__init__(tracking_uri, experiment)
        self.out, self.run_name = Path(out), run_name
        self.active = False  # until start()
        self._params: dict[str, str] = {}
        self._children: dict[int, str] = {}
        self._steps: dict[int | None, int] = {}

    # -- the callbacks -------------------------------------------------------------------
    def start(self, config: dict, params: dict | None = None) -> "MlflowTracker":
        """Open the parent run (`params` add to or override the config's); on failure warn once, stay off."""
        self.active = True
        self.safely(self._start, config, params or {})
        return self

    def on_epoch(self, record: dict) -> None:
        self.safely(self._epoch, record)

    def __call__(self, record: dict, state) -> None:
        self.safely(self._trial, record)

    def finish(self, state, out_dir: str | Path | None = None) -> None:
        """After the run: the final metrics (from its LoopState) and artifacts on the parent run."""
        self.safely(self._finish, state, Path(out_dir or self.out))

    def fail(self, status: str = "FAILED") -> None:
        """The loop raised (FAILED) or was interrupted (KILLED): close every open run so."""
        self.safely(self.close_all, status)

    # -- the work ------------------------------------------------------------------------
    def _start(self, config: dict, params: dict) -> None:
        self._params = {**flatten(config), **short_params(config), **{k: str(v) for k, v in params.items()}}
        self.run_id = self.open_run(self.run_name, self._params, {"autolabel.out": str(self.out.resolve())})
        self.client.log_text(self.run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")

    def _child(self, trial: int) -> str:
        if trial not in self._children:
            # the parent tag nests it; trial runs carry no source type of their own
            tags = {"mlflow.parentRunId": self.run_id, "mlflow.source.type": None}
            self._children[trial] = self.open_run(f"trial-{trial}", {**self._params, "trial": str(trial)}, tags)
        return self._children[trial]

    def _epoch(self, record: dict) -> None:
        """Queue one epoch; the trial's child gets it (the final fit's go to the parent, `final_*`)."""
        trial = record.get("trial")
        run_id = self.run_id if trial is None else self._child(trial)
        step = self._steps.get(trial, 0)  # counts across stages, so fine-tuning's steps never repeat
        self._steps[trial] = step + 1
        prefix = "final_" if trial is None else ""
        self.queue(run_id, {prefix + k: v for k, v in record.items() if k not in ("trial", "epoch", "stage")}, step)

    def _trial(self, record: dict) -> None:
        trial = record["trial"]
        child = self._child(trial)
        self.flush()
        metrics = self.metrics(trial_metrics(record), trial)
        for run_id in (child, self.run_id):
            self.send(run_id, metrics)
        self.client.set_tag(child, "stop", str(record.get("stop")))
        # the trial's CSV, written just before by RunWriter
        self.log_files(child, [self.out / "trials" / f"trial_{trial:02d}.csv"], "trials")
        self.close(child)

    def _finish(self, state, out_dir: Path) -> None:
        self.flush()
        est, _ = state.estimated_precision()
        final = {"final_test_accuracy": state.test_accuracy, "final_estimated_precision": est,
                 "final_pseudo_labels": int((state.labels >= 0).sum()), "final_n_trials": state.n_trials}
        self.log_metrics(self.run_id, final, state.n_trials)
        self.client.set_tag(self.run_id, "termination_reason", state.termination_reason)
        self.log_files(self.run_id, [out_dir / name for name in ("dataset.csv", "metrics.json", *PICTURES)])
        self.log_files(self.run_id, [out_dir / "checkpoint"], "checkpoint")
        self.close(self.run_id)


def start(out: str | Path, config: dict, *, tracking_uri: str | None = None,
          experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None,
          params: dict | None = None) -> MlflowTracker:
    """A started tracker for one autolabel run (inactive, after one warning, if MLflow fails)."""
    return MlflowTracker(out, tracking_uri, experiment, run_name).start(config, params)
