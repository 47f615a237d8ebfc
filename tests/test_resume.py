"""Crash safety: a run killed anywhere and continued with `autolabel --resume` ends with the same
bytes as an uninterrupted one; a full disk is one line and leaves the last trial's files intact;
`--resume` refuses other settings or other images."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from autolabel.cli import main
from classification import fileio
from classification.digest import sealed
from tests.conftest import REPO
from tests.crash import CRASH_ENV

RUN = "import tests.crash; tests.crash.install(); from autolabel.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
ARGS = ["--quiet", "--no-mlflow", "--n-trials", "4", "--img-size", "64"]
RESULTS = ["dataset.csv", "metrics.json"] + [f"trials/trial_{i:02d}.csv" for i in range(1, 5)]


def autolabel(*args, crash: str | None = None) -> subprocess.CompletedProcess:
    # One thread: on a busy 2-core machine torch's intra-op threads contend and L-BFGS runs ~10x
    # slower. Every run here (baseline and resumed) uses the same setting, so results compare.
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop(CRASH_ENV, None)
    if crash:
        env[CRASH_ENV] = crash
    return subprocess.run([sys.executable, "-c", RUN, *map(str, args)], env=env, capture_output=True, check=False,
                          text=True, timeout=600)


def state(out: Path) -> dict:
    return json.loads((out / "state.json").read_text())


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume-config") / "small.yaml"
    path.write_text(yaml.safe_dump({"train": {"n_views": 2}}))
    return path


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, config, cache_dir) -> Path:
    """An uninterrupted 4-trial run on the bundled sample."""
    out = tmp_path_factory.mktemp("resume-baseline") / "run"
    done = autolabel(*ARGS, "--config", config, "--cache-dir", cache_dir, "--out", out)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def one_thread():
    """In-process runs with the subprocesses' thread count (see `autolabel`), so bytes compare."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_killed_anywhere_then_resumed_equals_uninterrupted(baseline, config, tmp_path, capsys):
    out, cold = tmp_path / "run", tmp_path / "cold-cache"  # a cold cache: the first kill is mid-extraction
    first = autolabel(*ARGS, "--config", config, "--cache-dir", cold, "--out", out, crash="extract:0")
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert (out / "config.yaml").is_file() and not (out / "state.json").exists()
    # each resumed process is killed again further on: during trial 2's training, after trial 3's
    # CSV, dataset.csv and metrics.json but before its state.json, and before the final fit
    for point, committed in (("train:2", 1), ("commit:3", 2), ("final:4", 4)):
        killed = autolabel("--quiet", "--no-mlflow", "--resume", out, "--cache-dir", cold, crash=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        assert state(out)["trial"] == committed and not state(out)["finished"], point
        if point == "commit:3":  # written ahead of the commit; the resumed trial 3 rewrites it
            assert (out / "trials" / "trial_03.csv").is_file()
    done = autolabel("--quiet", "--no-mlflow", "--resume", out)
    assert done.returncode == 0, done.stderr
    assert state(out)["finished"] and state(out)["trial"] == 4
    for name in RESULTS:
        assert (out / name).read_bytes() == (baseline / name).read_bytes(), name
    assert main(["--resume", str(out)]) == 0
    assert "already finished (4 trials" in capsys.readouterr().out


@pytest.mark.slow
def test_disk_full_is_one_line_and_keeps_the_last_trial(baseline, config, cache_dir, tmp_path, monkeypatch,
                                                        capsys, one_thread):
    out, real, seen, before = tmp_path / "run", fileio.atomic_path, [], {}

    @contextmanager
    def full_at_trial_3(path):  # trial 3's dataset.csv is the third one written
        with real(path) as tmp:
            yield tmp
            seen.append(Path(path).name)
            if seen.count("dataset.csv") == 3 and Path(path).name == "dataset.csv":
                before.update({p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".tmp"})
                raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio, "atomic_path", full_at_trial_3)
    code = main([*ARGS, "--config", str(config), "--cache-dir", str(cache_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "disk full" in err and str(out) in err and f"--resume {out}" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # no temp file left, none torn
    assert state(out)["trial"] == 2
    monkeypatch.setattr(fileio, "atomic_path", real)
    assert main(["--quiet", "--no-mlflow", "--resume", str(out)]) == 0
    for name in RESULTS:
        assert (out / name).read_bytes() == (baseline / name).read_bytes(), name


def test_out_on_an_existing_run_suggests_resume(baseline, capsys):
    assert main(["--no-mlflow", "--out", str(baseline), "--n-trials", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run" in err and f"--resume {baseline}" in err


def test_resume_refuses_changed_settings(baseline, capsys):
    assert main(["--no-mlflow", "--resume", str(baseline), "--seed", "1", "--img-size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the saved run has train.seed 0, not 1" in err


def test_resume_refuses_changed_images(baseline, sample, tmp_path, capsys):
    run, pool = tmp_path / "run", tmp_path / "pool"
    shutil.copytree(baseline, run)
    pool.mkdir()
    for img in sorted((sample / "unlabeled").rglob("*.jpg"))[:20]:
        shutil.copy(img, pool / img.name)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["data"].update(data_raw=str(pool), truth=None, test=None)  # as if the pool had changed on disk
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    (run / "state.json").write_text(json.dumps(sealed({**state(run), "finished": False})))
    assert main(["--no-mlflow", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differ from the ones the run started with" in err


def test_resume_of_a_folder_without_a_run_is_one_line(tmp_path, capsys):
    assert main(["--resume", str(tmp_path)]) == 2
    assert "no run there" in capsys.readouterr().err
