"""Where MLflow tracking goes: the tracking URI (MLflow 3's embedded sqlite default spelled out),
a fast probe of a server, the experiment and its artifact location, UI links. The client that
logs there is autolabel.tracking_client."""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

DEFAULT_EXPERIMENT = "autolabel"  # every command tracks into it unless --experiment says otherwise
# A server that dies mid-run must cost seconds, not MLflow's default 7 retries x 120 s timeouts.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
PROBE_TIMEOUT = 3.0     # seconds to wait on a server's /health before giving up on it


def resolve_tracking_uri(uri: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else MLflow 3's embedded default spelled out:
    sqlite:///mlflow.db in the working directory (never the ./mlruns file store)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(Path.cwd() / 'mlflow.db').as_posix()}"


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def runs_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The UI page of an experiment's runs, or of one run."""
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/{page}"


def probe(uri: str) -> None:
    """Fail fast (one short request, no retries) when an HTTP tracking server is not there."""
    if not is_http(uri):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT).raise_for_status()
    except requests.RequestException as e:
        raise ConnectionError(f"no MLflow server at {uri} ({type(e).__name__})") from None


def ensure_experiment(client, name: str, tracking_uri: str | None = None) -> str:
    """The experiment's id, created if needed. With a local sqlite store its artifacts live in
    mlruns/ next to the database file, wherever the command runs from."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    location = None
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        location = (db.parent.resolve() / "mlruns" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)).as_uri()
    return client.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def env(**values: str):
    """Set environment variables for the duration of a block."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
