"""The certificate on the run's MLflow parent run: metrics `review_*` (and per class), tags
`review.scope` / `review.method` / `review.confidence`, and certificate.json as an artifact under
review/. As everywhere in autolabel, a tracking problem is one warning and never a failure."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from autolabel.tracking import finite
from autolabel.tracking_store import HTTP_DEFAULTS, is_http, probe, resolve_tracking_uri
from classification.errors import first_line

_logger = logging.getLogger(__name__)


def certificate_metrics(cert: dict) -> dict[str, float]:
    """The certificate's numbers as MLflow metrics (None, as for a stratified sample's overall, left out)."""
    values = {f"review_{k}": cert.get(k) for k in ("n", "errors", "precision_hat", "precision_lower_bound",
                                                     "more_reviews_needed")}
    for c, s in cert["per_class"].items():
        values[f"review_precision_hat_{c}"] = s["precision_hat"]
        values[f"review_precision_lower_bound_{c}"] = s["precision_lower_bound"]
    return finite(values)


def log_certificate(cert: dict, path: Path, run_id: str | None, tracking_uri: str | None) -> str | None:
    """Log `cert` (written at `path`) to MLflow run `run_id`; a line saying where, or None (with a
    warning) when it could not be logged."""
    if not run_id:
        _logger.warning("the run was not tracked in MLflow (no mlflow_run_id in state.json): certificate not logged")
        return None
    uri = resolve_tracking_uri(tracking_uri)
    try:
        probe(uri)  # a dead server costs seconds, not MLflow's retries
        if is_http(uri):
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        client = MlflowClient(uri)
        client.get_run(run_id)  # a missing run fails here, before anything is half-logged
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, cert["trial"]) for k, v in certificate_metrics(cert).items()]
        client.log_batch(run_id, metrics=metrics)
        for key in ("scope", "method", "confidence"):
            client.set_tag(run_id, f"review.{key}", str(cert[key]))
        client.log_artifact(run_id, str(path), "review")
    except Exception as e:  # any MLflow, network or store problem: the certificate file stands
        _logger.warning("certificate not logged to MLflow run %s at %s: %s", run_id, uri, first_line(e))
        return None
    return f"logged to MLflow run {run_id} ({uri})"
