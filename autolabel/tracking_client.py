"""The one MLflow client every tracker builds on (the loop's in autolabel.tracking; the grid's,
`lr-find`'s and `train --folds`' in autolabel.tracking_tools).

Its rules:
- warn once: the first MLflow error (server down, store unreadable, ...) is one warning, tracking
  is off from then on and the command carries on; the runs it had open are marked FAILED, best
  effort, so they do not look RUNNING forever;
- bounded retries: a dead server is found by one short probe, and MLflow's HTTP retries and
  timeouts are capped (autolabel.tracking_store.HTTP_DEFAULTS);
- batching: params and metrics go out through `log_batch`, within MLflow's limits, and metrics
  queued with `queue` (the epochs of a long fit) go out together at least every FLUSH_SECONDS.

mlflow is imported only once a run starts, so `import autolabel` stays fast.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from pathlib import Path

from autolabel.tracking_store import (DEFAULT_EXPERIMENT, HTTP_DEFAULTS, ensure_experiment, env, is_http, probe,
                                      resolve_tracking_uri, runs_url)
from classification.errors import first_line

PARAM_BATCH, METRIC_BATCH, PARAM_VALUE_MAX = 100, 1000, 6000  # MLflow's log_batch limits
FLUSH_SECONDS = 5.0     # queued metrics go out in batches, at least this often (long fine-tuning epochs)
SOURCE_TAGS = {"mlflow.source.name": "autolabel", "mlflow.source.type": "LOCAL"}


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


def metric_key(name: str) -> str:
    # class names may hold characters MLflow refuses in metric names
    return re.sub(r"[^\w\-. /]", "_", name)[:250]


def finite(values: dict) -> dict[str, float]:
    """Numbers only, keys made valid; None and NaN are left out (they would break the charts)."""
    clean = {}
    for k, v in values.items():
        if isinstance(v, (bool, int, float)) and math.isfinite(v):
            clean[metric_key(k)] = float(v)
    return clean


class TrackingClient:
    """An MlflowClient behind the rules above. `run_id` is the command's main run (the one
    `describe` points at); `client` is the MlflowClient once connected."""

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = DEFAULT_EXPERIMENT):
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment = experiment or DEFAULT_EXPERIMENT
        self.active, self.client, self.experiment_id, self.run_id = True, None, None, None
        self._open: list[str] = []  # runs created and not yet terminated, oldest first
        self._pending: list[tuple[str, list]] = []  # (run id, Metric objects) queued, not yet sent
        self._flushed = time.monotonic()

    # -- the warn-once rule ----------------------------------------------------------------
    def safely(self, fn, *args) -> None:
        if not self.active:
            return
        try:
            fn(*args)
        except Exception as e:  # any MLflow, network or store error: never the command's problem
            self.active = False
            logging.getLogger(type(self).__module__).warning(
                "MLflow tracking is off for the rest of this run: %s", first_line(e))
            self._abandon()

    def describe(self) -> str | None:
        """Where the main run went, for the CLI's last line; None when tracking is off."""
        if not self.run_id or not self.active:
            return None
        if is_http(self.tracking_uri):
            return f"tracked in MLflow: {runs_url(self.tracking_uri, self.experiment_id, self.run_id)}"
        return (f"tracked in MLflow: {self.tracking_uri}, experiment {self.experiment}, run {self.run_id}; "
                "view with `autolabel ui`")

    def connect(self) -> None:
        """Fail fast on a dead server, bound MLflow's HTTP retries, then open the experiment."""
        probe(self.tracking_uri)
        if is_http(self.tracking_uri):
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
        from mlflow import MlflowClient

        self.client = MlflowClient(self.tracking_uri)
        self.experiment_id = ensure_experiment(self.client, self.experiment, self.tracking_uri)

    def _abandon(self) -> None:
        """After the first error: mark what is open FAILED with no retries, forget the queue."""
        self._pending = []
        if self.client is not None:
            with contextlib.suppress(Exception), env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"):
                for run_id in reversed(self._open):
                    self.client.set_terminated(run_id, "FAILED")
        self._open.clear()

    # -- runs ------------------------------------------------------------------------------
    def open_run(self, name: str | None, params: dict, tags: dict | None = None) -> str:
        """A new run with `params` (flattened) and SOURCE_TAGS plus `tags` (a None value drops a
        source tag); connects on first use."""
        if self.client is None:
            self.connect()
        tags = {k: v for k, v in {**SOURCE_TAGS, **(tags or {})}.items() if v is not None}
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        self._open.append(run_id)
        self.log_params(run_id, params)
        return run_id

    def close(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)
        self._open.remove(run_id)

    def close_all(self, status: str) -> None:
        """Send what is queued, then end every open run, the newest (a child) first."""
        self.flush()
        for run_id in reversed(list(self._open)):
            self.close(run_id, status)

    # -- batching --------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(run_id, params=items[i:i + PARAM_BATCH])

    @staticmethod
    def metrics(values: dict, step: int) -> list:
        """`values` (made finite) as MLflow Metric objects stamped now."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        return [Metric(k, v, now, step) for k, v in finite(values).items()]

    def send(self, run_id: str, metrics: list) -> None:
        for i in range(0, len(metrics), METRIC_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + METRIC_BATCH])

    def log_metrics(self, run_id: str, values: dict, step: int = 0) -> None:
        self.send(run_id, self.metrics(values, step))

    def log_series(self, run_id: str, series: dict[str, list], steps: list[int] | None = None) -> None:
        """Each key's values at step 0, 1, ... (or `steps`); NaN points are left out."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.send(run_id, [Metric(k, x, now, steps[i] if steps else i)
                           for key, values in series.items() for i, v in enumerate(values)
                           for k, x in finite({key: v}).items()])

    def queue(self, run_id: str, values: dict, step: int) -> None:
        """Metrics to send with the next batch (stamped now); sends the queue when it is old."""
        self._pending.append((run_id, self.metrics(values, step)))
        if time.monotonic() - self._flushed > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        by_run: dict[str, list] = {}
        for run_id, metrics in self._pending:
            by_run.setdefault(run_id, []).extend(metrics)
        self._pending, self._flushed = [], time.monotonic()
        for run_id, metrics in by_run.items():
            self.send(run_id, metrics)

    def log_files(self, run_id: str, paths, artifact_path: str | None = None) -> None:
        """The files of `paths` that exist (a folder: its content, under `artifact_path`)."""
        for path in map(Path, paths):
            if path.is_file():
                self.client.log_artifact(run_id, str(path), artifact_path)
            elif path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path)
