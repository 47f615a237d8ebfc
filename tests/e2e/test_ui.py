"""`autolabel ui` in a real browser: a 2-trial loop on the bundled sample, then the MLflow UI it
starts, rendered by headless Chromium (runs page and trial comparison), then Ctrl-C."""
from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from autolabel.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PARENT = "e2e-ui-run"           # the --out folder's name is the parent run's name
STARTUP_SECONDS = 90            # mlflow server took 15-25 s to answer /health on a busy 2-core machine
BUDGET_MS = 25_000              # virtual time for the SPA: its data arrives by fetch after the load event
WINDOW = (1400, 900)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-headless-shell")
    if not found:
        pytest.skip("chromium not installed: apt-get install chromium")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ui_command(port: int) -> list[str]:
    """`autolabel ui`, as a user runs it: the console script of this interpreter's environment
    (autolabel.cli is a package, so `python -m autolabel.cli` is not an entry point)."""
    script = shutil.which("autolabel", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                             os.environ.get("PATH", "")]))
    entry = [script] if script else [sys.executable, "-c", "import sys; from autolabel.cli import main; sys.exit(main())"]
    return [*entry, "ui", "--port", str(port)]


class Browser:
    """Headless Chromium from the command line: one process per page, with virtual time so the
    hash-routed app has rendered before the DOM is dumped or the screenshot taken."""

    def __init__(self, binary: str, profile: Path):
        self.binary, self.profile = binary, profile  # own profile: nothing read from or left in ~/.config

    def _run(self, url: str, budget_ms: int, *action: str) -> subprocess.CompletedProcess:
        cmd = [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
               "--no-first-run", f"--user-data-dir={self.profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
               f"--virtual-time-budget={budget_ms}", *action, url]
        done = subprocess.run(cmd, capture_output=True, timeout=budget_ms / 1000 + 120)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        return done

    def text(self, url: str, *needles: str) -> str:
        """The rendered page as whitespace-separated text; once more with twice the virtual time
        when a needle is still missing (a slow first fetch on a loaded machine)."""
        for budget in (BUDGET_MS, 2 * BUDGET_MS):
            text = visible_text(self._run(url, budget, "--dump-dom").stdout.decode(errors="replace"))
            if all(n in text for n in needles):
                break
        return text

    def screenshot(self, url: str, path: Path) -> Path:
        self._run(url, BUDGET_MS, f"--screenshot={path}")
        assert path.is_file(), f"no screenshot of {url}"
        return path


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def assert_rendered(png: Path) -> None:
    """A window-sized picture that is not one flat colour (a blank page or a crashed renderer)."""
    from PIL import Image

    with Image.open(png) as img:
        assert img.size == WINDOW
        lo_hi = img.convert("L").getextrema()
    assert lo_hi[1] - lo_hi[0] > 100, f"{png} looks blank"


def stop(proc: subprocess.Popen, grace: float = 60) -> bool:
    """Ctrl-C as a terminal sends it (to the whole process group: autolabel, its mlflow server and
    the server's workers); kill the group only if that did not end all of it (the server took
    ~20 s to wind down its job consumers). True when Ctrl-C alone did."""
    deadline = time.monotonic() + grace
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    while time.monotonic() < deadline:
        if proc.poll() is not None and not running_in_group(proc.pid):
            return True
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return False


def running_in_group(pgid: int) -> bool:
    """Whether any process of the group still runs; zombies (reaped by init, or not, once their
    parent is gone) do not count."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp
        except (OSError, IndexError):
            continue  # it ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_for_url(proc: subprocess.Popen, log: Path, base: str) -> str:
    """The runs-page URL `autolabel ui` prints once the server answers /health."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"autolabel ui exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        printed = re.search(r"MLflow UI: (\S+)", log.read_text(errors="replace"))
        if printed:
            assert requests.get(f"{base}/health", timeout=5).ok
            return printed.group(1)
        time.sleep(0.5)
    pytest.fail(f"autolabel ui did not answer in {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


def test_ui_shows_the_runs_and_compares_the_trials(sample, cache_dir, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    browser = Browser(chromium(), tmp_path / "chromium-profile")
    # The loop and `autolabel ui` both use the default store: ./mlflow.db in this working directory.
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = work / "small.yaml"
    config.write_text("train:\n  img_size: 128\n  n_views: 2\n")  # fewer augmented views: a quicker loop
    code = main(["--quiet", "--data-clean", str(sample / "labeled"), "--data-raw", str(sample / "unlabeled"),
                 "--config", str(config), "--img-size", "128", "--n-trials", "2", "--out", str(work / PARENT),
                 "--cache-dir", str(cache_dir)])
    assert code == 0, capsys.readouterr().err
    assert (work / "mlflow.db").is_file()

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("autolabel").experiment_id
    runs = client.search_runs([exp_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in parent] == [PARENT]
    assert [r.info.run_name for r in trials] == ["trial-1", "trial-2"]

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = tmp_path / "ui.log"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with open(log, "wb") as out:
        # its own session, so that the Ctrl-C below reaches exactly it and its server
        proc = subprocess.Popen(ui_command(port), cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        runs_page = wait_for_url(proc, log, base)
        assert runs_page == f"{base}/#/experiments/{exp_id}/runs"

        # Nested runs: the table lists the parent, with its trials collapsed under it.
        text = browser.text(runs_page, PARENT)
        assert PARENT in text and "autolabel" in text, text[:3000]
        browser.screenshot(runs_page, shots / "runs.png")

        ids = json.dumps([r.info.run_id for r in trials], separators=(",", ":"))
        compare_page = (f"{base}/#/compare-runs?runs={urllib.parse.quote(ids)}"
                        f"&experiments={urllib.parse.quote(json.dumps([exp_id]))}")
        text = browser.text(compare_page, "trial-1", "trial-2", "Parameters Show diff only")
        assert "Comparing 2 Runs from 1 Experiment" in text and "Parameters Show diff only" in text, text[:3000]
        assert {"trial-1", "trial-2"} <= set(text.split()), text[:3000]
        # the trial hyperparameters the loop logs, in the Parameters table (not only as metric names)
        params = text.split("Parameters Show diff only", 1)[1].split("Metrics Show diff only", 1)[0].split()
        assert {"threshold", "policy", "mode", "model"} <= set(params), " ".join(params)[:3000]
        browser.screenshot(compare_page, shots / "compare.png")
    finally:
        by_ctrl_c = stop(proc)
        keep = os.environ.get("AUTOLABEL_E2E_SCREENSHOTS")
        if keep:  # e.g. for CI to keep as artifacts, also when an assertion above failed
            Path(keep).mkdir(parents=True, exist_ok=True)
            for png in shots.glob("*.png"):
                shutil.copy2(png, Path(keep) / png.name)
    assert by_ctrl_c and proc.returncode == 0, f"autolabel ui (or its server) did not stop on Ctrl-C:\n{log.read_text()[-3000:]}"
    with pytest.raises(requests.ConnectionError):  # nothing left serving the port
        requests.get(f"{base}/health", timeout=5)

    for png in (shots / "runs.png", shots / "compare.png"):
        assert_rendered(png)
