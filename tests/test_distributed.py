"""`torchrun --nproc_per_node 2` on CPU (gloo) runs the same loop as one process: extraction and
prediction split by rank and gathered on rank 0, finetune mode under DistributedDataParallel.

Head mode: rank 0 trains the head on the gathered features, so dataset.csv is byte-identical.
Finetune mode: each rank's gradient covers half of every batch before the all-reduce, so the
weights differ from one process's in float rounding only: the same images get the same labels,
sources and trials, and the confidences agree to 1e-5.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ARGS = ["--quiet", "--no-mlflow", "--n-trials", "2", "--img-size", "64"]
MODES = {"head": {"n_views": 2},
         "finetune": {"mode": "finetune", "stage1_epochs": 1, "stage2_epochs": 1, "unfreeze_blocks": 1}}


def run(cmd: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per process: the same sums in both runs
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_torchrun_two_processes_label_like_one(mode, tmp_path):
    config = tmp_path / "config.yaml"
    # Finetune mode: the temperature is fitted on cross-validated finetune fits, whose ~1e-6
    # differences between one and two processes move it and so scale every confidence; this test
    # compares the distributed machinery, so it reads the head's own probabilities. Confidence
    # weighting is off there too: trial 1's confidences already differ by up to 0.0064 between one
    # and two processes, and weighted they become trial 2's loss weights (0.013 at the end).
    loop = {"calibration": "none", "confidence_weight": False} if mode == "finetune" else {}
    config.write_text(yaml.safe_dump({"train": MODES[mode], "loop": loop}))
    one = [sys.executable, "-m", "autolabel", *ARGS, "--config", config]
    run([*one, "--cache-dir", tmp_path / "cache-1", "--out", tmp_path / "one"], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "autolabel", *ARGS, "--config", config]
    run([*torchrun, "--cache-dir", tmp_path / "cache-2", "--out", tmp_path / "two"], tmp_path)
    single, multi = (tmp_path / "one" / "dataset.csv"), (tmp_path / "two" / "dataset.csv")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("one", "two"))) == ["one", "two"]
    if mode == "head":
        assert multi.read_bytes() == single.read_bytes()
        return
    a, b = pd.read_csv(single), pd.read_csv(multi)
    assert len(a) == len(b) > 40  # the human labels and some pseudo-labels
    cols = ["path", "label", "source", "trial"]
    assert a[cols].equals(b[cols])
    assert (a.confidence - b.confidence).abs().max() < 1e-5


def test_subcommands_refuse_to_run_under_torchrun(tmp_path):
    """Only the loop is distributed: a subcommand under torchrun is a one-line error on each rank."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "autolabel", "--no-mlflow", "index", "query", "--help"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    line = "autolabel: error: `autolabel index` runs in one process; under torchrun only the loop"
    assert done.stderr.count(line) == 2
    assert "autolabel/cli" not in done.stderr  # no traceback from the ranks (torchrun prints its own)
