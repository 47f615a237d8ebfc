"""The MLflow UI behind `autolabel ui`: `mlflow server` (`mlflow ui` is its alias) on the store the
runs wrote to, on 127.0.0.1 by default, in the foreground until Ctrl-C."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from autolabel.tracking_store import ensure_experiment, probe
from classification.errors import InputError, first_line

STARTUP_SECONDS = 120  # mlflow server took 15-20 s to answer /health on a busy 2-core machine


def experiment_id(store: str, name: str) -> str:
    """The experiment's id, creating it (with the runs' artifact location) if no run made it yet."""
    try:
        probe(store)
        from mlflow import MlflowClient

        return ensure_experiment(MlflowClient(store), name, store)
    except Exception as e:  # a dead server or an unreadable store is the user's to fix
        raise InputError(f"cannot open MLflow store {store}: {first_line(e)}") from None


def check_port(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be in 1..65535, got {port}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is fine
        try:
            s.bind((host, port))
        except OSError as e:
            raise InputError(f"cannot serve on {host}:{port} ({e.strerror or e}); pass another --port") from None


def local_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches a server listening on host:port."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def start_server(store: str, host: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
           # where the runs put their artifacts when they logged to this store themselves
           "--default-artifact-root", (Path.cwd() / "mlruns").as_uri(),
           "--host", host, "--port", str(port), "--workers", "1"]
    return subprocess.Popen(cmd)


def wait_ready(proc: subprocess.Popen, base: str) -> None:
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


class Terminated(Exception):
    """This process got SIGTERM (a service manager, `kill`, a closed session)."""


@contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises `Terminated` instead of ending the process on the spot, so
    the server this process started is stopped rather than left listening."""
    def raise_terminated(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop(proc: subprocess.Popen, signalled: bool = True) -> None:
    """After Ctrl-C: the server shuts down on the same SIGINT from a terminal (`signalled`);
    otherwise ask it (mlflow server forwards SIGTERM to its workers), and only then force it."""
    steps = ((None, 5),) if signalled else ()
    for signal_it, grace in (*steps, (proc.terminate, 15), (proc.kill, 5)):
        if signal_it:
            signal_it()
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
