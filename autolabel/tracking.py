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
off for the rest of the run, while the local outputs are written as always. mlflow is imported
only here and only once tracking starts, so `import autolabel` stays fast.
"""
from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path

import yaml

from autolabel.tracking_store import WarnOnce, resolve_tracking_uri

_logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "autolabel"
PARAM_BATCH, METRIC_BATCH, PARAM_VALUE_MAX = 100, 1000, 6000  # MLflow's log_batch limits
FLUSH_SECONDS = 5.0     # epoch metrics go out in batches, at least this often (long fine-tuning epochs)
PICTURES = ("confusion_matrix.png", "gallery.png", "thresholds.png")


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 0.003}} -> {"train.lr": "0.003"}, values cut to MLflow's limit."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:PARAM_VALUE_MAX]
    return flat


def short_params(config: dict) -> dict[str, str]:
    """The handful of settings users compare trials and runs by, under short names."""
    train, loop = config.get("train", {}), config.get("loop", {})
    return {"threshold": str(loop.get("threshold")), "policy": str(loop.get("policy")),
            "mode": str(train.get("mode")), "model": str(train.get("model"))}


def metric_key(name: str) -> str:
    # class names may hold characters MLflow refuses in metric names
    return re.sub(r"[^\w\-. /]", "_", name)[:250]


def trial_metrics(record: dict) -> dict[str, float]:
    """A trial record as flat numbers: counts, thresholds per class, validation, test, audit."""
    out = {k: record.get(k) for k in ("accepted", "coverage", "newly_accepted", "dropped", "refused_ood",
                                      "mean_confidence", "train_size", "skipped", "test_accuracy")}
    out["best_val_accuracy"], out["best_val_macro_f1"] = record.get("val_accuracy"), record.get("val_macro_f1")
    out.update({f"threshold_{c}": t for c, t in record.get("thresholds", {}).items()})
    audit = record.get("audit")
    if audit:
        out.update(precision=audit["precision"], audit_coverage=audit["coverage"], correct=audit["correct"])
        for c, s in audit["per_class"].items():
            out[f"precision_{c}"], out[f"audit_coverage_{c}"] = s["precision"], s["coverage"]
    return finite(out)


def finite(values: dict) -> dict[str, float]:
    """Numbers only, keys made valid; None and NaN are left out (they would break the charts)."""
    clean = {}
    for k, v in values.items():
        if isinstance(v, (bool, int, float)) and math.isfinite(v):
            clean[metric_key(k)] = float(v)
    return clean


class MlflowTracker(WarnOnce):
    """Trial callback (`__call__(record, state)`) and epoch callback (`on_epoch(record)`) for
    `PseudoLabeler`; put it after `RunWriter` so records carry the audit and the trial CSV exists.

    Call `start(config)` before the loop, then `finish(state, out_dir)` or `fail()`.
    """

    def __init__(self, out: str | Path, tracking_uri: str | None = None,
                 experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None):
        self.out, self.experiment, self.run_name = Path(out), experiment or DEFAULT_EXPERIMENT, run_name
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.active, self.client, self.experiment_id, self.run_id = False, None, None, None
        self._params: dict[str, str] = {}
        self._children: dict[int, str] = {}
        self._open: set[str] = set()  # child runs not yet FINISHED (at most the current trial's)
        self._steps: dict[int | None, int] = {}
        self._pending: list[tuple[str, list]] = []  # (run id, Metric objects) not yet sent
        self._flushed = time.monotonic()

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
        self.safely(self._close, status)

    # -- the work ------------------------------------------------------------------------
    def open_runs(self) -> list[str]:
        return [self.run_id] if self.run_id else []

    def _start(self, config: dict, params: dict) -> None:
        self.connect()
        run = self.client.create_run(self.experiment_id, run_name=self.run_name,
                                     tags={"mlflow.source.name": "autolabel", "mlflow.source.type": "LOCAL",
                                           "autolabel.out": str(self.out.resolve())})
        self.run_id = run.info.run_id
        self._params = {**flatten(config), **short_params(config),
                        **{k: str(v) for k, v in params.items()}}
        self._log_params(self.run_id, self._params)
        self.client.log_text(self.run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")

    def _child(self, trial: int) -> str:
        if trial not in self._children:
            run = self.client.create_run(self.experiment_id, run_name=f"trial-{trial}",
                                         tags={"mlflow.parentRunId": self.run_id,
                                               "mlflow.source.name": "autolabel"})
            self._children[trial] = run.info.run_id
            self._open.add(run.info.run_id)
            self._log_params(run.info.run_id, {**self._params, "trial": str(trial)})
        return self._children[trial]

    def _epoch(self, record: dict) -> None:
        """Buffer one epoch; the trial's child gets it (the final fit's go to the parent, `final_*`)."""
        trial = record.get("trial")
        run_id = self.run_id if trial is None else self._child(trial)
        step = self._steps.get(trial, 0)  # counts across stages, so fine-tuning's steps never repeat
        self._steps[trial] = step + 1
        values = {k: v for k, v in record.items() if k not in ("trial", "epoch", "stage")}
        prefix = "final_" if trial is None else ""
        self._pending.append((run_id, self._metrics(finite({prefix + k: v for k, v in values.items()}), step)))
        if time.monotonic() - self._flushed > FLUSH_SECONDS:
            self._flush()

    def _trial(self, record: dict) -> None:
        trial = record["trial"]
        child = self._child(trial)
        self._flush()
        metrics = self._metrics(trial_metrics(record), trial)
        for run_id in (child, self.run_id):
            self._log_metrics(run_id, metrics)
        self.client.set_tag(child, "stop", str(record.get("stop")))
        csv = self.out / "trials" / f"trial_{trial:02d}.csv"  # written just before by RunWriter
        if csv.is_file():
            self.client.log_artifact(child, str(csv), "trials")
        self.client.set_terminated(child, "FINISHED")
        self._open.discard(child)

    def _finish(self, state, out_dir: Path) -> None:
        self._flush()
        final = {"final_test_accuracy": state.test_accuracy,
                 "final_pseudo_labels": int((state.labels >= 0).sum()),
                 "final_n_trials": state.n_trials}
        self._log_metrics(self.run_id, self._metrics(finite(final), state.n_trials))
        self.client.set_tag(self.run_id, "termination_reason", state.termination_reason)
        for name in ("dataset.csv", "metrics.json", *PICTURES):
            if (out_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(out_dir / name))
        if (out_dir / "checkpoint").is_dir():
            self.client.log_artifacts(self.run_id, str(out_dir / "checkpoint"), "checkpoint")
        self.client.set_terminated(self.run_id, "FINISHED")

    def _close(self, status: str) -> None:
        self._flush()
        for child in sorted(self._open):
            self.client.set_terminated(child, status)
        self._open.clear()
        self.client.set_terminated(self.run_id, status)

    # -- batching ------------------------------------------------------------------------
    @staticmethod
    def _metrics(values: dict[str, float], step: int) -> list:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        return [Metric(k, v, now, step) for k, v in values.items()]

    def _flush(self) -> None:
        by_run: dict[str, list] = {}
        for run_id, metrics in self._pending:
            by_run.setdefault(run_id, []).extend(metrics)
        self._pending, self._flushed = [], time.monotonic()
        for run_id, metrics in by_run.items():
            self._log_metrics(run_id, metrics)

    def _log_metrics(self, run_id: str, metrics: list) -> None:
        for i in range(0, len(metrics), METRIC_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + METRIC_BATCH])

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(run_id, params=items[i:i + PARAM_BATCH])


def start(out: str | Path, config: dict, *, tracking_uri: str | None = None,
          experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None,
          params: dict | None = None) -> MlflowTracker:
    """A started tracker for one autolabel run (inactive, after one warning, if MLflow fails)."""
    return MlflowTracker(out, tracking_uri, experiment, run_name).start(config, params)
