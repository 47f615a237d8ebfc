"""MLflow tracking of the pseudo-mask loop (`autolabel segment label`), on the loop's tracker:
one parent run per output folder, one nested child run per trial (`trial-<i>`).

    parent  params: the run's settings flattened (`train.encoder`, `loop.threshold`, ...) plus
                    `threshold`, `model`, `task=segment`
            metrics: every trial's numbers with step = trial; final_accepted, final_n_trials
            artifacts: dataset.csv, metrics.json
    child   params: the same plus `trial`; metrics: the trial's epochs (train_loss, val_miou, ...,
            step = epoch) and its numbers (accepted, mean_confidence, pseudo_miou, ...)

The rules of autolabel.tracking_client hold: the first MLflow error is one warning, then tracking
is off and the loop carries on.
"""
from __future__ import annotations

from pathlib import Path

from autolabel.tracking import MlflowTracker
from autolabel.tracking_client import finite
from autolabel.tracking_store import DEFAULT_EXPERIMENT


class SegmentTracker(MlflowTracker):
    """`begin(run)`, `on_epoch(record)` and `on_trial(record)` for segmentation.label.LabelHooks;
    `finish(run)` after the loop, `fail(status)` when it raised. Until `begin` (the inputs are
    checked and the folder locked) it does nothing, so a refused run leaves no MLflow run."""

    def __init__(self, out, config: dict, params: dict, tracking_uri: str | None = None,
                 experiment: str = DEFAULT_EXPERIMENT):
        super().__init__(out, tracking_uri, experiment, run_name=Path(out).name)
        self._config, self._start_params = config, params

    def begin(self, run) -> None:
        resumed = {"resumed_after": run.trial} if run.trial else {}
        self.start(self._config, {**self._start_params, **resumed})

    def on_trial(self, record: dict) -> None:
        self.safely(self._trial, record)

    def finish(self, run, out_dir: str | Path | None = None) -> None:
        self.safely(self._finish, run, Path(out_dir or self.out))

    def _trial(self, record: dict) -> None:
        trial = record["trial"]
        child = self._child(trial)
        self.flush()
        metrics = self.metrics(finite(record), trial)
        for run_id in (child, self.run_id):
            self.send(run_id, metrics)
        self.close(child)

    def _finish(self, run, out_dir: Path) -> None:
        self.flush()
        self.log_metrics(self.run_id, {"final_accepted": len(run.accepted), "final_n_trials": run.trial,
                                       "final_coverage": len(run.accepted) / max(len(run.pool), 1)}, run.trial)
        self.log_files(self.run_id, [out_dir / name for name in ("dataset.csv", "metrics.json")])
        self.close(self.run_id)


def tracker_for(out: str | Path, config: dict, tracking: dict) -> SegmentTracker:
    """A tracker for one loop, not yet started; `tracking` is
    autolabel.tracking_tools.tracking_choice's answer."""
    params = {"task": "segment", "model": config["train"].get("encoder"),
              "threshold": config["loop"].get("threshold")}
    return SegmentTracker(out, config, params, tracking.get("uri"),
                          tracking.get("experiment") or DEFAULT_EXPERIMENT)
