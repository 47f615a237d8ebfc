"""`autolabel grid`, MLflow runs for `lr-find` and `train --folds`, and the shipped configs."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from autolabel.cli import main
from autolabel.config import LoopConfig, load_config
from autolabel.grid import expand, parse_param
from autolabel.tracking_tools import track_lr_find, tracking_choice
from classification.config import TrainConfig
from classification.errors import InputError
from segmentation.config import load_seg_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COMBOS = {("0.7", "fixed"), ("0.7", "flexmatch"), ("0.9", "fixed"), ("0.9", "flexmatch")}
FINAL = {"test_accuracy", "precision", "coverage", "accepted", "val_macro_f1"}


def client_for(store: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    return client, client.get_experiment_by_name("autolabel").experiment_id


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, cache_dir):
    """A 2x2 grid on the bundled sample, from a fresh working directory with the default --out."""
    work = tmp_path_factory.mktemp("grid")
    config = work / "small.yaml"
    config.write_text("train:\n  n_views: 2\n")  # half the strong views to compute; test_tracking's too
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        code = main(["--quiet", "grid", "--config", str(config), "--param", "threshold=0.7,0.9",
                     "--param", "policy=fixed,flexmatch",
                     "--n-trials", "1", "--img-size", "128", "--cache-dir", str(cache_dir),
                     "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}"])
    assert code == 0
    (out,) = (work / "runs").iterdir()
    return out, work / "mlflow.db"


@pytest.mark.slow
def test_grid_is_one_parent_run_with_a_child_per_combination(grid_run):
    out, store = grid_run
    client, exp = client_for(store)
    runs = client.search_runs([exp])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 5
    parent = parents[0]
    assert parent.info.run_name == out.name and parent.data.tags["autolabel.grid"] == "true"
    assert parent.data.params["grid.threshold"] == "0.7,0.9" and parent.data.params["metric"] == "test_accuracy"
    assert "loop.threshold" not in parent.data.params  # the base value is what no child ran with
    assert [f.path for f in client.list_artifacts(parent.info.run_id)] == ["grid.csv"]

    children = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert {(c.data.params["threshold"], c.data.params["policy"]) for c in children} == COMBOS
    grid = pd.read_csv(out / "grid.csv").set_index("combination")
    for child in children:
        params = child.data.params
        assert child.info.run_name == f"threshold={params['threshold']},policy={params['policy']}"
        assert (params["mode"], params["model"], params["loop.n_trials"]) == ("head", "tf_efficientnet_lite0", "1")
        assert params["loop.threshold"] == params["threshold"] and params["train.img_size"] == "128"
        assert FINAL <= set(child.data.metrics)
        row = grid.loc[child.info.run_name]
        assert child.data.metrics["test_accuracy"] == pytest.approx(row["test_accuracy"])
        assert child.data.metrics["accepted"] == row["accepted"]
        assert [m.step for m in client.get_metric_history(child.info.run_id, "trial_accepted")] == [1]
        assert {f.path for f in client.list_artifacts(child.info.run_id)} == {"dataset.csv", "metrics.json"}
    assert parent.data.metrics["best_test_accuracy"] == pytest.approx(grid["test_accuracy"].max())


@pytest.mark.slow
def test_grid_csv_ranks_every_combination_and_each_has_its_run_folder(grid_run):
    out, _ = grid_run
    grid = pd.read_csv(out / "grid.csv", dtype={"threshold": str})
    assert len(grid) == 4 and list(grid["rank"]) == [1, 2, 3, 4]
    assert list(grid["test_accuracy"]) == sorted(grid["test_accuracy"], reverse=True)
    assert set(zip(grid["threshold"], grid["policy"])) == COMBOS
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["1_threshold=0.7_policy=fixed", "2_threshold=0.7_policy=flexmatch",
                       "3_threshold=0.9_policy=fixed", "4_threshold=0.9_policy=flexmatch"]
    for name in folders:
        frame = pd.read_csv(out / name / "dataset.csv")
        assert (frame["source"] == "human").sum() == 40  # human labels never change
        loop = json.loads((out / name / "metrics.json").read_text())
        assert loop["final"]["n_trials"] == 1


@pytest.mark.parametrize("param,message", [
    ("nope=1", "--param: unknown key 'nope'; valid: augment_human,"),
    ("threshold=2", "--param threshold=2: --threshold must be in (0, 1], got 2.0"),
    ("threshold", "--param 'threshold': expected key=value1,value2"),
    ("n_trials=1.5", "--param n_trials: '1.5' is not a valid int"),
    ("loop.lr=0.1", "--param: unknown key 'loop.lr'; valid: balance,"),
])
def test_bad_param_is_a_one_line_error(param, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["grid", "--param", param, "--param", "policy=fixed,flexmatch"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())  # refused before anything is read or written


def test_param_values_take_the_field_type():
    train, loop = TrainConfig(), LoopConfig()
    assert parse_param("train.lr=0.001,1e-2").values == (0.001, 0.01)
    assert parse_param("img_size=none,128").values == (None, 128)
    assert parse_param("sticky=true,no").values == (True, False)
    combos = expand(["threshold=0.7,0.9", "policy=fixed,flexmatch", "lr=0.1"], train, loop)
    assert [c.name for c in combos[:2]] == ["threshold=0.7,policy=fixed,lr=0.1",
                                            "threshold=0.7,policy=flexmatch,lr=0.1"]
    t, l = combos[3].configs(train, loop)
    assert (t.lr, l.threshold, l.policy) == (0.1, 0.9, "flexmatch")
    with pytest.raises(InputError, match="each setting once"):
        expand(["threshold=0.7", "loop.threshold=0.9"], train, loop)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves(path):
    if path.name.startswith("segment"):  # `autolabel segment train --config`: a train: section of SegConfig
        load_seg_config(path)
        return
    train, loop = load_config(path)
    TrainConfig.from_dict(train)
    LoopConfig(**loop)


def test_finetune_and_bench_configs_say_what_they_are_for():
    train, loop = load_config(CONFIGS / "finetune_gpu.yaml")
    cfg = TrainConfig.from_dict(train)
    assert (cfg.mode, cfg.device, cfg.batch_size, cfg.img_size, cfg.workers) == ("finetune", "cuda", 128, 224, 8)
    assert LoopConfig(**loop).weak_views == 2
    train, loop = load_config(CONFIGS / "bench.yaml")
    assert TrainConfig.from_dict(train).img_size == 224
    bench = LoopConfig(**loop)
    assert (bench.n_trials, bench.threshold, bench.policy, bench.balance) == (10, 0.8, "flexmatch", 1.5)


@pytest.mark.slow
def test_lr_find_is_one_run_with_the_suggestion_and_the_loss_per_step(sample, cache_dir, tmp_path):
    out, store = tmp_path / "lr", tmp_path / "mlflow.db"
    code = main(["--quiet", "lr-find", "--data-clean", str(sample / "labeled"), "--out", str(out), "--img-size", "128",
                 "--steps", "20", "--cache-dir", str(cache_dir), "--tracking-uri", f"sqlite:///{store}"])
    assert code == 0
    record = json.loads((out / "lr_find.json").read_text())
    client, exp = client_for(store)
    (run,) = client.search_runs([exp])
    assert run.info.status == "FINISHED" and run.data.tags["autolabel.command"] == "lr-find"
    assert run.data.metrics["suggested_lr"] == pytest.approx(record["suggested"])
    assert run.data.params["steps"] == "20" and run.data.params["train.img_size"] == "128"
    losses = client.get_metric_history(run.info.run_id, "lr_find_loss")
    assert [m.step for m in losses] == list(range(record["steps_run"]))
    assert [m.value for m in losses] == pytest.approx(record["losses"])
    assert {f.path for f in client.list_artifacts(run.info.run_id)} == {"lr_find.png", "lr_find.json"}


@pytest.mark.slow
def test_folds_are_one_run_with_a_score_per_fold(sample, cache_dir, tmp_path):
    out, store = tmp_path / "folds", tmp_path / "mlflow.db"
    code = main(["--quiet", "train", "--data-clean", str(sample / "labeled"), "--out", str(out), "--img-size", "128",
                 "--folds", "2", "--cache-dir", str(cache_dir), "--tracking-uri", f"sqlite:///{store}"])
    assert code == 0
    summary = json.loads((out / "folds.json").read_text())
    client, exp = client_for(store)
    (run,) = client.search_runs([exp])
    assert run.info.status == "FINISHED" and run.data.params["n_folds"] == "2"
    for score in ("accuracy", "macro_f1"):
        history = client.get_metric_history(run.info.run_id, f"fold_{score}")
        assert [m.step for m in history] == [0, 1]
        assert [m.value for m in history] == pytest.approx([f[score] for f in summary["folds"]])
        assert run.data.metrics[f"{score}_mean"] == pytest.approx(summary["mean_std"][score]["mean"])
        assert run.data.metrics[f"{score}_std"] == pytest.approx(summary["mean_std"][score]["std"])
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["folds.json"]


def test_tracking_flags_fall_back_on_the_root_command():
    root = {"mlflow": False, "tracking_uri": "http://x", "experiment": "e"}
    assert tracking_choice(None, None, None, root) is None  # autolabel --no-mlflow lr-find ...
    assert tracking_choice(True, None, None, root) == {"uri": "http://x", "experiment": "e"}
    assert tracking_choice(None, "sqlite:///a.db", None, None) == {"uri": "sqlite:///a.db", "experiment": "autolabel"}


def test_a_dead_server_costs_lr_find_one_warning(tmp_path, caplog):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    record = {"config": TrainConfig().to_dict(), "data_clean": "x", "start": 1e-6, "end": 1.0, "steps": 5,
              "n_images": 1, "optimizer": "adamw", "suggested": 1e-3, "steps_run": 1, "losses": [1.0],
              "raw_losses": [1.0], "lrs": [1e-3]}
    with caplog.at_level(logging.WARNING, logger="autolabel.tracking_tools"):
        assert track_lr_find(record, tmp_path, {"uri": f"http://127.0.0.1:{port}"}) is None
    assert len(caplog.records) == 1 and "no MLflow server" in caplog.records[0].getMessage()
