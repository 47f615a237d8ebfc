"""`autolabel ui`: the MLflow UI on the runs `autolabel` tracked, in the foreground until Ctrl-C.

It serves the same store the runs wrote to (by default sqlite:///mlflow.db in the working
directory, artifacts under ./mlruns) with `mlflow server` (`mlflow ui` is its alias) on
127.0.0.1, and prints the URL of the experiment's runs page.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from autolabel.tracking_store import DEFAULT_EXPERIMENT, ensure_experiment, is_http, probe, resolve_tracking_uri, runs_url
from classification.errors import InputError, first_line

STARTUP_SECONDS = 120  # mlflow server took 15-20 s to answer /health on a busy 2-core machine


def ui(
    port: int = typer.Option(5000, help="Port to serve the UI on."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on; 0.0.0.0 exposes it to the network."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="Store to serve (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here); an http(s) server is only linked to."),
    experiment: str = typer.Option(DEFAULT_EXPERIMENT, "--experiment", help="Experiment whose runs page to open."),
):
    """Start the MLflow UI on the tracked runs (compare trials, see pictures and datasets)."""
    store = resolve_tracking_uri(tracking_uri)
    if is_http(store):  # a server is already running: just point at it
        typer.echo(f"MLflow UI: {runs_url(store, _experiment_id(store, experiment))}")
        return
    _check_port(host, port)
    exp_id = _experiment_id(store, experiment)
    url = runs_url(f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}", exp_id)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
           # where the runs put their artifacts when they logged to this store themselves
           "--default-artifact-root", (Path.cwd() / "mlruns").as_uri(),
           "--host", host, "--port", str(port), "--workers", "1"]
    typer.echo(f"starting MLflow UI on {store} ...")
    proc = subprocess.Popen(cmd)
    try:
        _wait_ready(proc, url.split("/#")[0])
        typer.echo(f"MLflow UI: {url}  (Ctrl-C to stop)")
        proc.wait()
    except KeyboardInterrupt:  # the server got the same Ctrl-C; give it time to shut down
        _stop(proc)
        return
    if proc.returncode:
        raise InputError(f"mlflow server exited with code {proc.returncode} (see its messages above)")


def _experiment_id(store: str, name: str) -> str:
    """The experiment's id, creating it (with the runs' artifact location) if no run made it yet."""
    try:
        probe(store)
        from mlflow import MlflowClient

        return ensure_experiment(MlflowClient(store), name, store)
    except Exception as e:  # a dead server or an unreadable store is the user's to fix
        raise InputError(f"cannot open MLflow store {store}: {first_line(e)}") from None


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is fine
        try:
            s.bind((host, port))
        except OSError as e:
            raise InputError(f"cannot serve on {host}:{port} ({e.strerror or e}); pass another --port") from None


def _wait_ready(proc: subprocess.Popen, base: str) -> None:
    import requests

    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InputError(f"mlflow server exited with code {proc.returncode} (see its messages above)")
        try:
            if requests.get(f"{base}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    """After Ctrl-C: the server shuts down on the same SIGINT from a terminal; otherwise ask it
    (mlflow server forwards SIGTERM to its workers), and only then force it."""
    for signal_it, grace in ((None, 5), (proc.terminate, 15), (proc.kill, 5)):
        if signal_it:
            signal_it()
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
