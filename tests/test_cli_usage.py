"""A typo on the command line ends in the usage, one error line (with a suggestion where one is
close) and exit code 2: never a traceback, and nothing written."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from autolabel.cli import main
from tests.conftest import REPO


def test_the_installed_entry_point_answers_a_typo_without_a_traceback(tmp_path):
    """The console command as a user runs it (a fresh process, the typer that is installed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "autolabel", "--n-trialz", "3"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "No such option: --n-trialz" in proc.stderr and "--n-trials" in proc.stderr.split("--n-trialz", 1)[1]
    assert "Usage: autolabel" in proc.stderr
    assert not list(tmp_path.iterdir())  # no run folder, no MLflow store


@pytest.mark.parametrize("args,error,suggestion", [
    pytest.param(["--n-trialz", "3"], "No such option: --n-trialz", "Possible options: --n-trials", id="unknown-option"),
    pytest.param(["index", "build", "--imagez", "x"], "No such option: --imagez", "--images", id="unknown-option-of-a-command"),
    pytest.param(["idnex"], "No such command 'idnex'", "Did you mean 'index'?", id="unknown-command"),
    pytest.param(["revieww"], "No such command 'revieww'", "Try 'autolabel --help' for help", id="unknown-command-none-close"),
    pytest.param(["--n-trials"], "Option '--n-trials' requires an argument", None, id="missing-value"),
    pytest.param(["index", "build", "--images"], "Option '--images' requires an argument", None,
                 id="missing-value-of-a-command"),
])
def test_a_typo_is_a_usage_error_with_exit_code_2(args, error, suggestion, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert error in err and "Traceback" not in err
    assert suggestion is None or suggestion in err
    assert [line for line in err.splitlines() if line.startswith("Error:")] == [line for line in err.splitlines()
                                                                                 if error in line]
    assert not list(tmp_path.iterdir())
