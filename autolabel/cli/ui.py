"""`autolabel ui`: the MLflow UI on the runs `autolabel` tracked, in the foreground until Ctrl-C.

It serves the same store the runs wrote to (by default sqlite:///mlflow.db in the working
directory, artifacts under ./mlruns) with `mlflow server` (`mlflow ui` is its alias) on
127.0.0.1, and prints the URL of the experiment's runs page.
"""
from __future__ import annotations

from typing import Optional

import typer

from autolabel.tracking_store import DEFAULT_EXPERIMENT, is_http, resolve_tracking_uri, runs_url
from autolabel.tracking_ui import (Terminated, check_port, experiment_id, local_url, start_server, stop,
                                   terminated_as_interrupt, wait_ready)
from classification.errors import InputError


def ui(
    port: int = typer.Option(5000, help="Port to serve the UI on."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on; 0.0.0.0 exposes it to the network."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="Store to serve (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here); an http(s) server is only linked to."),
    experiment: str = typer.Option(DEFAULT_EXPERIMENT, "--experiment", help="Experiment whose runs page to open."),
):
    """Start the MLflow UI on the tracked runs (compare trials, see pictures and datasets)."""
    store = resolve_tracking_uri(tracking_uri)
    if is_http(store):  # a server is already running: just point at it
        typer.echo(f"MLflow UI: {runs_url(store, experiment_id(store, experiment))}")
        return
    check_port(host, port)
    base = local_url(host, port)
    url = runs_url(base, experiment_id(store, experiment))
    typer.echo(f"starting MLflow UI on {store} ...")
    proc = start_server(store, host, port)
    try:
        with terminated_as_interrupt():
            wait_ready(proc, base)
            typer.echo(f"MLflow UI: {url}  (Ctrl-C to stop)")
            proc.wait()
    except Terminated:  # SIGTERM came to us only: stop the server and its workers now
        stop(proc, signalled=False)
        return
    except KeyboardInterrupt:  # the server got the same Ctrl-C; give it time to shut down
        stop(proc)
        return
    if proc.returncode:
        raise InputError(f"mlflow server exited with code {proc.returncode} (see its messages above)")
