"""MLflow tracking of the loop: a real server, the embedded sqlite default, a dead server, off."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from autolabel.cli import main
from autolabel.tracking import MlflowTracker

PICTURES = {"confusion_matrix.png", "gallery.png", "thresholds.png"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def mlflow_env(monkeypatch):
    """No tracking URI from the environment; whatever the code sets here is undone afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in (("MLFLOW_LOGGING_LEVEL", "WARNING"), ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"),
                       ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on a free port with its own sqlite store and proxied artifacts."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
                             "--artifacts-destination", str(root / "artifacts")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # 15-20 s to start on a busy 2-core machine
        while not _healthy(url):
            assert proc.poll() is None and time.monotonic() < deadline, (root / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()  # mlflow server forwards it to its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=1).ok
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def small_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "small.yaml"
    path.write_text("train:\n  img_size: 128\n  n_views: 2\n")
    return path


def run_cli(capsys, sample, cache_dir, config, out, *extra) -> tuple[int, str, str]:
    code = main(["--quiet", "--data-clean", str(sample / "labeled"), "--data-raw", str(sample / "unlabeled"),
                 "--config", str(config), "--img-size", "128", "--out", str(out), "--cache-dir", str(cache_dir),
                 *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_default_store_is_sqlite_in_the_working_directory(sample, cache_dir, small_config, tmp_path,
                                                          monkeypatch, capsys):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, sample, cache_dir, small_config, tmp_path / "run", "--n-trials", "1")
    assert code == 0 and "view with `autolabel ui`" in out
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("autolabel").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 2 and parents[0].info.run_name == "run"
    assert not list(tmp_path.rglob("meta.yaml"))  # artifacts under mlruns/, but no file store
    artifacts = tmp_path / "mlruns" / "autolabel" / parents[0].info.run_id / "artifacts"
    assert (artifacts / "dataset.csv").is_file() and (artifacts / "checkpoint" / "model.pt").is_file()


def test_a_dead_server_costs_one_warning_and_nothing_else(sample, cache_dir, small_config, tmp_path,
                                                          monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    code, out, err = run_cli(capsys, sample, cache_dir, small_config, tmp_path / "run", "--n-trials", "1",
                             "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert code == 0 and (tmp_path / "run" / "dataset.csv").is_file()
    warnings = [line for line in err.splitlines() if "MLflow" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING") and "no MLflow server" in warnings[0]
    assert "tracked in MLflow" not in out and not (tmp_path / "mlflow.db").exists()
    assert time.monotonic() - start < 120


def test_no_mlflow_tracks_nothing(sample, cache_dir, small_config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, sample, cache_dir, small_config, tmp_path / "run", "--n-trials", "0",
                           "--no-mlflow")
    assert code == 0 and "tracked in MLflow" not in out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"dataset.csv", "confusion_matrix.png"} <= names  # the local outputs are the same
    assert not names & {"gallery.png", "thresholds.png"}  # 0 trials: no pseudo-labels, no thresholds


def test_ui_refuses_a_busy_port(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["ui", "--port", str(busy.getsockname()[1])])
    assert code == 2 and "pass another --port" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


class BrokenClient:
    """Stands in for an MlflowClient whose server went away mid-run."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError("API request to /api/2.0/mlflow/runs/log-batch failed")
        return fail


def test_a_failure_mid_run_warns_once_and_turns_tracking_off(tmp_path, caplog):
    tracker = MlflowTracker(tmp_path, tracking_uri="http://127.0.0.1:9")
    tracker.active, tracker.client, tracker.run_id, tracker.experiment_id = True, BrokenClient(), "p", "1"
    with caplog.at_level(logging.WARNING, logger="autolabel.tracking"):
        tracker.on_epoch({"trial": 1, "epoch": 0, "train_loss": 1.0})
        tracker({"trial": 1, "accepted": 3}, None)
        tracker.fail()
    assert not tracker.active and tracker.describe() is None
    assert [r.getMessage() for r in caplog.records] == [
        "MLflow tracking is off for the rest of this run: API request to /api/2.0/mlflow/runs/log-batch failed"]


# The server tests come last: the module's server then runs beside them only.
@pytest.mark.slow
def test_server_gets_a_parent_run_and_one_child_per_trial(server, sample, cache_dir, small_config, tmp_path,
                                                          monkeypatch, capsys):
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, sample, cache_dir, small_config, tmp_path / "run", "--n-trials", "2",
                             "--tracking-uri", server, "--truth", str(sample / "unlabeled_truth.csv"),
                             "--test", str(sample / "test"))
    assert code == 0 and "MLflow" not in err, err
    client = MlflowClient(server)
    exp_id = client.get_experiment_by_name("autolabel").experiment_id
    runs = client.search_runs([exp_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0].info.run_id
    assert f"{server}/#/experiments/{exp_id}/runs/{parent}" in out
    children = client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                                  order_by=["attributes.run_name ASC"])
    assert [c.info.run_name for c in children] == ["trial-1", "trial-2"]
    assert {r.info.status for r in runs} == {"FINISHED"}

    for run in [parents[0], *children]:
        params = run.data.params
        assert (params["threshold"], params["policy"], params["mode"], params["model"]) == \
            ("None", "growth", "head", "tf_efficientnet_lite0")
        assert params["train.img_size"] == "128" and params["loop.n_trials"] == "2"
    assert children[1].data.params["trial"] == "2"

    trials = json.loads((tmp_path / "run" / "metrics.json").read_text())["trials"]
    for key in ("accepted", "coverage", "precision", "estimated_precision"):
        history = client.get_metric_history(parent, key)
        assert [m.step for m in history] == [1, 2]
        local = [t["audit"]["precision"] if key == "precision" else t[key] for t in trials]
        assert [m.value for m in history] == pytest.approx(local)
    for i, child in enumerate(children, start=1):
        cid = child.info.run_id
        epochs = client.get_metric_history(cid, "train_loss")
        assert len(epochs) >= 2 and [m.step for m in epochs] == list(range(len(epochs)))
        assert len(client.get_metric_history(cid, "val_macro_f1")) == len(epochs)
        assert [m.step for m in client.get_metric_history(cid, "accepted")] == [i]
        assert {"precision", "test_accuracy", "threshold_airplane", "estimated_precision", "temperature",
                "estimated_precision_airplane"} <= set(child.data.metrics)
        assert [f.path for f in client.list_artifacts(cid, "trials")] == [f"trials/trial_{i:02d}.csv"]

    final = json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]
    assert client.get_run(parent).data.metrics["final_estimated_precision"] == pytest.approx(final["estimated_precision"])
    names = {f.path for f in client.list_artifacts(parent)}
    assert {"config.yaml", "dataset.csv", "metrics.json", "checkpoint"} | PICTURES <= names
    assert {f.path for f in client.list_artifacts(parent, "checkpoint")} == \
        {"checkpoint/model.pt", "checkpoint/classes.json", "checkpoint/config.json"}
    copy = download_artifacts(run_id=parent, artifact_path="dataset.csv", dst_path=str(tmp_path / "dl"),
                              tracking_uri=server)
    assert Path(copy).read_text() == (tmp_path / "run" / "dataset.csv").read_text()


@pytest.mark.slow
def test_ui_links_to_a_running_server(server, capsys):
    assert main(["ui", "--tracking-uri", server]) == 0
    assert f"MLflow UI: {server}/#/experiments/" in capsys.readouterr().out
