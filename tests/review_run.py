"""One small finished run on the bundled sample for the review tests (the review page in Chromium,
corrections fed back): made once per test session, tracked in the session's MLflow store. Tests
copy it (`fresh_copy`) before they change it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from autolabel.cli import main

# the tiny run: 1 trial at 64 px with 2 training views (tests/test_resume.py's features, shared by the cache)
ARGS = ["--quiet", "--n-trials", "1", "--img-size", "64"]
CONFIG = "train:\n  n_views: 2\n"


def tiny_run(tmp_path_factory, cache_dir: Path) -> Path:
    root = tmp_path_factory.getbasetemp() / "review-tiny-run"
    state = root / "run" / "state.json"
    if state.is_file() and json.loads(state.read_text())["finished"]:
        return root / "run"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    (root / "small.yaml").write_text(CONFIG)
    code = main([*ARGS, "--config", str(root / "small.yaml"), "--out", str(root / "run"), "--cache-dir", str(cache_dir)])
    assert code == 0, "the tiny run failed"
    return root / "run"


def fresh_copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to
