"""Bad, empty and self-referential inputs, and concurrent writers: one line and exit code 2 (or a
clean refusal), never a traceback, nothing lost, and the images read left as they were."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from autolabel.cli import main
from autolabel.settings import resolve_configs
from classification.checkpoint import load_checkpoint, save_checkpoint
from classification.config import DEFAULT_MODEL, TrainConfig
from classification.errors import InputError, brief
from classification.locks import index_lock, run_lock
from classification.models import create_classifier
from classification.transforms import DataConfig, data_config
from classification.yamlfile import read_yaml
from embeddings.config import IndexConfig
from embeddings.index import EmbeddingIndex
from tests.review_run import fresh_copy, tiny_run
from tests.test_integrity_digests import blobs, tree_digest

REPO = Path(__file__).resolve().parents[1]


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    return err


# -- configs and files read back ---------------------------------------------------------------

def alias_bomb(levels: int = 9) -> str:
    """A few hundred bytes that expand to 9**9 (387 million) strings."""
    names = "abcdefghij"[:levels]
    items = [f'&a [{", ".join(["x"] * 9)}]']
    items += [f"&{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip(names, names[1:])]
    return f"loop:\n  threshold: [{', '.join(items)}]\n"


def test_a_compact_alias_bomb_config_fails_fast_and_small(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size < 700
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="nested aliases"):
        resolve_configs(path, {}, {})
    seconds, (_, peak) = time.perf_counter() - t0, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 1 and peak < 200 * 2**20, (seconds, peak)
    assert main(["--config", str(path), "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys, "nested aliases")
    assert not (tmp_path / "run").exists()


def test_aliases_that_stay_small_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {n_trials: 3}\nloop: *b\n")
    assert read_yaml(path)["loop"] == {"n_trials": 3}


def test_a_bad_value_is_quoted_short_without_rendering_it_whole():
    huge = [[list(range(10**5))] * 10**3]
    assert len(brief(huge)) <= 60 and len(brief("x" * 10**6)) <= 60
    with pytest.raises(InputError) as e:
        TrainConfig.from_dict({"lr": huge})
    assert len(str(e.value)) < 120


@pytest.mark.parametrize("change, words", [
    ({"std": [0, 0, 0]}, "data.std must be 3 finite numbers > 0"),
    ({"std": [0.5]}, "data.std"),
    ({"mean": ["nan", 0.5, 0.5]}, "data.mean"),
    ({"size": "big"}, "data.size must be an integer"),
    ({"size": -5}, "data.size"),
    ({"crop_pct": 7}, "data.crop_pct"),
    ({"interpolation": "cubicx"}, "data.interpolation must be one of"),
])
def test_a_checkpoint_config_with_bad_input_settings_is_refused(change, words, tmp_path, sample, capsys):
    model = create_classifier(DEFAULT_MODEL, 2).eval()
    save_checkpoint(tmp_path / "ck", model, ["a", "b"], TrainConfig(img_size=32), data_config(model, 32))
    path = tmp_path / "ck" / "config.json"
    meta = json.loads(path.read_text())
    meta["data"].update(change)
    path.write_text(json.dumps(meta))
    inputs = tree_digest(sample / "test")
    out = tmp_path / "predicted.csv"
    assert main(["-q", "predict", "--checkpoint", str(tmp_path / "ck"), "--images", str(sample / "test"),
                 "--out", str(out)]) == 2
    one_line_error(capsys, words, "config.json")
    assert not out.exists() and tree_digest(sample / "test") == inputs


def test_a_checkpoint_config_that_is_whole_loads_through_the_same_checks(tmp_path):
    model = create_classifier(DEFAULT_MODEL, 2).eval()
    cfg = data_config(model, 32)
    save_checkpoint(tmp_path / "ck", model, ["a", "b"], TrainConfig(img_size=32), cfg)
    assert load_checkpoint(tmp_path / "ck")[3] == cfg == DataConfig.from_dict(json.loads(json.dumps(cfg.__dict__)))


@pytest.mark.parametrize("mapping", ['{"a": 1}', '{"a": 0, "b": 0}', '["a", "b"]', '{"": 0}'])
def test_a_class_map_that_misnames_classes_is_refused(mapping, tmp_path, capsys):
    model = create_classifier(DEFAULT_MODEL, 2).eval()
    save_checkpoint(tmp_path / "ck", model, ["a", "b"], TrainConfig(img_size=32), data_config(model, 32))
    (tmp_path / "ck" / "classes.json").write_text(mapping)
    with pytest.raises(InputError, match="must map each class name to its index"):
        load_checkpoint(tmp_path / "ck")


def test_k_and_port_out_of_range_are_one_line(tmp_path, sample, capsys, cache_dir):
    x, meta = blobs()
    EmbeddingIndex.build(x, meta, IndexConfig(pca=8)).save(tmp_path / "arrays")
    with pytest.raises(InputError, match="-k must be a whole number >= 1"):
        EmbeddingIndex.load(tmp_path / "arrays").search(x[:2], 0)
    query = next((sample / "test" / "cat").iterdir())
    assert main(["-q", "index", "query", str(tmp_path / "arrays"), str(query)]) == 2
    one_line_error(capsys, "names no model and input size")
    assert main(["-q", "index", "build", "--images", str(sample / "test" / "cat"), "--out", str(tmp_path / "ix"),
                 "--pca", "8", "--img-size", "32", "--cache-dir", str(cache_dir)]) == 0
    capsys.readouterr()
    assert main(["-q", "index", "query", str(tmp_path / "ix"), str(query), "-k", "0"]) == 2
    one_line_error(capsys, "-k must be")
    # far more neighbours than the index holds: what it holds, without allocating a row per k
    assert main(["-q", "index", "query", str(tmp_path / "ix"), str(query), "-k", "1000000000", "--json"]) == 0
    (hit,) = json.loads(capsys.readouterr().out)
    assert len(hit["neighbours"]) == len(list((sample / "test" / "cat").iterdir()))
    assert main(["ui", "--port", "70000"]) == 2
    one_line_error(capsys, "--port must be in 1..65535")


# -- concurrent writers ------------------------------------------------------------------------

class Holder:
    """Another process holding `lock_file`'s lock, as a running autolabel would."""

    def __init__(self, lock_file: Path):
        code = ("import sys, time; from pathlib import Path; from classification.locks import exclusive\n"
                "with exclusive(Path(sys.argv[1]), 'x'):\n    print('held', flush=True); time.sleep(120)")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(lock_file)], cwd=REPO,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def __enter__(self) -> "Holder":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()  # the kernel drops the lock with the process
        self.proc.wait()


def test_a_second_writer_of_an_index_folder_is_refused_and_nothing_is_lost(tmp_path, sample, capsys):
    x, meta = blobs()
    EmbeddingIndex.build(x, meta, IndexConfig(pca=8)).save(tmp_path / "ix")
    before = tree_digest(tmp_path / "ix")
    with Holder(index_lock(tmp_path / "ix")) as other:
        assert main(["-q", "index", "add", str(tmp_path / "ix"), "--images", str(sample / "test" / "cat")]) == 2
        one_line_error(capsys, f"index folder {tmp_path / 'ix'} is in use by another autolabel process",
                       f"pid {other.proc.pid}")
        assert main(["-q", "index", "build", "--images", str(sample / "test"), "--out", str(tmp_path / "ix"),
                     "--force"]) == 2
        one_line_error(capsys, "is in use")
    assert tree_digest(tmp_path / "ix") == before  # the holder's index is untouched


@pytest.mark.slow  # the tiny run (shared with the review tests)
def test_resuming_a_run_that_is_running_is_refused(tmp_path_factory, cache_dir, tmp_path, capsys):
    run = fresh_copy(tiny_run(tmp_path_factory, cache_dir), tmp_path / "run")
    with Holder(run_lock(run)):
        before = tree_digest(run)  # the holder's pid in the lock file included
        assert main(["--quiet", "--no-mlflow", "--resume", str(run), "--n-trials", "2"]) == 2
        one_line_error(capsys, f"run folder {run} is in use by another autolabel process")
        assert tree_digest(run) == before


def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    with Holder(run_lock(out)):  # a run that has just made its folder
        assert main(["--quiet", "--no-mlflow", "--out", str(out)]) == 2
        one_line_error(capsys, "is in use by another autolabel process")
    assert {p.name for p in out.iterdir()} == {run_lock(out).name}  # nothing of the refused run


# -- empty and self-referential inputs -------------------------------------------------------------

@pytest.fixture
def labelled(tmp_path, sample) -> Path:
    """Two classes of the bundled labels, copied (some cases put a folder inside it)."""
    root = tmp_path / "labelled"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for p in sorted((sample / "labeled" / name).iterdir()):
            (root / name / p.name).write_bytes(p.read_bytes())
    return root


def pool_of(tmp_path: Path, sample: Path, n: int = 5) -> Path:
    pool = tmp_path / "pool"
    pool.mkdir()
    for p in sorted((sample / "unlabeled").iterdir())[:n]:
        (pool / p.name).write_bytes(p.read_bytes())
    return pool


@pytest.mark.parametrize("kind, code, words", [
    ("empty", 0, "holds no images"),
    ("not images", 2, "holds no usable image (2 file(s) skipped"),  # most likely the wrong folder
    ("already labelled", 0, "holds only images that are also labelled"),
])
def test_nothing_to_label_is_one_line_and_leaves_no_run_folder(kind, code, words, labelled, tmp_path, capsys,
                                                               cache_dir):
    pool = tmp_path / "pool"
    pool.mkdir()
    if kind == "not images":
        (pool / "a.jpg").write_text("not an image")
        (pool / "b.png").write_bytes(b"\x89PNG broken")
    if kind == "already labelled":
        for p in sorted((labelled / "cat").iterdir())[:3]:
            (pool / p.name).write_bytes(p.read_bytes())
    inputs = tree_digest(tmp_path)
    out = tmp_path.parent / f"{tmp_path.name}-run"
    assert main(["--quiet", "--no-mlflow", "--data-clean", str(labelled), "--data-raw", str(pool), "--out", str(out),
                 "--cache-dir", str(cache_dir)]) == code
    said = capsys.readouterr()
    line = (said.err if code else said.out).strip().splitlines()[-1]
    assert line.startswith(f"autolabel: {'error: ' if code else ''}nothing to label") and words in line, line
    assert not out.exists() and tree_digest(tmp_path) == inputs


def test_a_pool_inside_the_labelled_folder_is_refused(labelled, tmp_path, capsys):
    inside = labelled / "unlabelled"
    inside.mkdir()
    for raw in (inside, labelled):
        assert main(["--quiet", "--no-mlflow", "--data-clean", str(labelled), "--data-raw", str(raw),
                     "--out", str(tmp_path / "run")]) == 2
        one_line_error(capsys, "is inside --data-clean", "would be read as labelled")
    assert not (tmp_path / "run").exists()


def test_a_run_folder_inside_the_pool_is_refused_so_its_pictures_are_never_labelled(labelled, tmp_path, sample, capsys):
    pool = pool_of(tmp_path, sample)
    inputs = tree_digest(pool)
    assert main(["--quiet", "--no-mlflow", "--data-clean", str(labelled), "--data-raw", str(pool),
                 "--out", str(pool / "runs" / "x")]) == 2
    one_line_error(capsys, "is inside --data-raw", "choose a folder outside it")
    assert tree_digest(pool) == inputs and not (pool / "runs").exists()


# -- processes the tool starts -------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow  # a real mlflow server starts (10-40 s)
def test_ui_under_sigterm_stops_its_server(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ui = subprocess.Popen([sys.executable, "-m", "autolabel", "ui", "--port", str(port),
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in ui.stdout:  # "MLflow UI: http://...  (Ctrl-C to stop)" once the server answers
            if line.startswith("MLflow UI:"):
                break
        assert listening(port)
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) is not None
        deadline = time.monotonic() + 30
        while listening(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not listening(port)
    finally:
        ui.kill()


@pytest.mark.slow  # one trial of the tiny run's settings, on its cached features
def test_an_interrupted_run_prints_the_command_that_continues_it(tmp_path_factory, cache_dir, tmp_path, capsys):
    from autolabel import hooks
    from tests.review_run import ARGS, CONFIG

    tiny_run(tmp_path_factory, cache_dir)  # its features
    (tmp_path / "small.yaml").write_text(CONFIG)

    def ctrl_c(point: str, trial: int | None) -> None:
        if (point, trial) == ("train", 1):
            raise KeyboardInterrupt

    stop = hooks.listen(ctrl_c)
    try:
        assert main([*ARGS, "--no-mlflow", "--config", str(tmp_path / "small.yaml"), "--out", str(tmp_path / "run"),
                     "--cache-dir", str(cache_dir)]) == 130
    finally:
        stop()
    assert f"interrupted; continue with `autolabel --resume {tmp_path / 'run'}`" in capsys.readouterr().out


@pytest.mark.slow  # a tracked run killed (a subprocess), then resumed
@pytest.mark.parametrize("point", ["train:1", "train:2"])  # before and after its first commit
def test_a_tracked_run_killed_then_resumed_closes_its_old_mlflow_run(point, tmp_path_factory, cache_dir, tmp_path):
    from mlflow import MlflowClient

    from tests.review_run import CONFIG
    from tests.test_resume import autolabel

    tiny_run(tmp_path_factory, cache_dir)  # its features
    (tmp_path / "small.yaml").write_text(CONFIG)
    out = tmp_path / "run"
    args = ["--quiet", "--n-trials", "2", "--img-size", "64", "--config", tmp_path / "small.yaml",
            "--cache-dir", cache_dir]
    killed = autolabel(*args, "--out", out, crash=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    committed = (out / "state.json").is_file()
    assert committed == (point == "train:2")
    old = json.loads((out / "state.json").read_text())["mlflow_run_id"] if committed else \
        (out / ".mlflow_run_id").read_text()
    client = MlflowClient()
    assert client.get_run(old).info.status == "RUNNING"  # nobody closed it: the process was killed
    assert main(["--quiet", "--resume", str(out), "--cache-dir", str(cache_dir)]) == 0
    new = json.loads((out / "state.json").read_text())["mlflow_run_id"]
    assert client.get_run(old).info.status == "KILLED" and client.get_run(new).info.status == "FINISHED"
    assert client.get_run(new).data.params["resumed_from"] == old
