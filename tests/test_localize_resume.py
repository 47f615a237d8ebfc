"""`autolabel localize label` as a run: resume after the last completed trial (the same outcome
as an uninterrupted run, no trial redone), refusals when inputs or settings change, the run lock,
and MLflow tracking (a parent run, a child per trial with its CSV)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from autolabel.cli import main
from autolabel.localize_label import LabelRequest, run_label
from classification.errors import InputError
from classification.locks import exclusive, run_lock
from localization import labeling
from localization.config import LocalizeConfig
from localization.labeling import LabelSpec

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "boxes_sample"
TINY = {"version": "tiny-label", "model": {"img_size": 64}, "augmentation": {"views": 2},
        "training": {"head_epochs": 3, "unfreeze": 0, "workers": 0, "val_fraction": 0.0}}


@pytest.fixture
def top4(monkeypatch):
    """Trial t accepts pool images 4(t-1) .. 4t-1, whatever the model says: 2 trials leave some pool."""
    real_propose, real_accept = labeling.propose, labeling.accept

    def propose(probs, boxes, ok, rule):
        prop = real_propose(probs, boxes, ok, labeling.BoxRule(0.0, 0.0))
        prop.accepted = np.zeros_like(prop.accepted)
        prop.accepted[4 * (rule.trial - 1):4 * rule.trial] = True
        return prop

    def accept(trained, pool, state, rule, trial, cache, progress):
        return real_accept(trained, pool, state, SimpleNamespace(trial=trial), trial, cache, progress)

    monkeypatch.setattr(labeling, "propose", propose)
    monkeypatch.setattr(labeling, "accept", accept)


def request(out: Path, cache_dir: Path, n_trials: int, resume: bool = False, threshold: float = 0.5) -> LabelRequest:
    return LabelRequest(SAMPLE / "labels.csv", SAMPLE / "images", out, LabelSpec(n_trials, threshold),
                        LocalizeConfig.from_dict(TINY), cache_dir=cache_dir, resume=resume, echo=lambda line: None)


def run(req: LabelRequest) -> tuple[dict, list[int]]:
    trials = []
    metrics = run_label(req, on_trial=lambda record, outcome: trials.append(record["trial"]))
    return metrics, trials


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, cache_dir) -> Path:
    """A folder holding one completed trial (of a 2-trial budget: it can go on)."""
    out = tmp_path_factory.mktemp("saved") / "run"
    run(request(out, cache_dir, 1))
    return out


@pytest.fixture
def saved(saved_run, tmp_path) -> Path:
    shutil.copytree(saved_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.slow
def test_resume_continues_after_the_last_trial_as_if_never_stopped(tmp_path, cache_dir, top4):
    whole, trials = run(request(tmp_path / "whole", cache_dir, 2))
    assert trials == [1, 2] and whole["final"]["n_accepted"] == 8
    _, first = run(request(tmp_path / "cut", cache_dir, 1))
    before = (tmp_path / "cut" / "trials" / "trial_01.csv").read_bytes()
    resumed, second = run(request(tmp_path / "cut", cache_dir, 2, resume=True))
    assert first == [1] and second == [2]  # trial 1 is not redone
    assert (tmp_path / "cut" / "trials" / "trial_01.csv").read_bytes() == before
    for name in ("dataset.csv", "trials/trial_02.csv"):
        got, want = pd.read_csv(tmp_path / "cut" / name), pd.read_csv(tmp_path / "whole" / name)
        pd.testing.assert_frame_equal(got, want, atol=0.05)
    assert resumed["final"]["n_accepted"] == whole["final"]["n_accepted"]
    assert [r["trial"] for r in resumed["trials"]] == [1, 2]
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert state["trial"] == 2 and state["finished"]
    assert run(request(tmp_path / "cut", cache_dir, 2, resume=True))[1] == []  # finished: nothing to do


@pytest.mark.parametrize("change,message", [
    (dict(threshold=0.7), "the saved run has threshold 0.5, not 0.7"),
    (dict(resume=False), "already holds a localize label run; continue it with --resume"),
])
def test_resume_refuses_other_settings_in_one_line(saved, cache_dir, change, message):
    args = {"resume": True, **change}
    with pytest.raises(InputError) as e:
        run(request(saved, cache_dir, 2, **args))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_resume_refuses_other_inputs_and_damaged_state(saved, cache_dir):
    other = request(saved, cache_dir, 2, resume=True)
    other.data_raw = SAMPLE / "test.csv"  # a CSV of the same pool images, with other paths
    with pytest.raises(InputError, match="the pool .--data-raw. differ from the saved run's"):
        run(other)
    csv = saved / "trials" / "trial_01.csv"
    csv.write_text(csv.read_text().replace("accepted", "rejected"))
    with pytest.raises(InputError, match="trials/trial_01.csv is damaged or missing"):
        run(request(saved, cache_dir, 2, resume=True))
    state = saved / "state.json"
    state.write_text(state.read_text().replace('"trial": 1', '"trial": 7'))
    with pytest.raises(InputError, match="state.json is damaged"):
        run(request(saved, cache_dir, 2, resume=True))


def test_a_second_process_on_the_run_folder_is_refused(tmp_path, cache_dir):
    out = tmp_path / "o"
    with exclusive(run_lock(out), "test"):
        with pytest.raises(InputError, match="in use by another autolabel process"):
            run(request(out, cache_dir, 1))
    assert not (out / "state.json").exists()


@pytest.mark.slow
def test_mlflow_parent_and_a_child_per_trial(tmp_path, cache_dir, top4, capsys):
    (tmp_path / "tiny.yaml").write_text(json.dumps(TINY))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["--quiet", "localize", "label", "--data", str(SAMPLE / "labels.csv"), "--data-raw",
                 str(SAMPLE / "images"), "--n-trials", "2", "--out", str(tmp_path / "out"), "--config",
                 str(tmp_path / "tiny.yaml"), "--cache-dir", str(cache_dir), "--tracking-uri", uri])
    assert code == 0 and "tracked in MLflow" in capsys.readouterr().out
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("autolabel").experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags), key=lambda r: r.info.run_name)
    assert len(parent) == 1 and [c.info.run_name for c in children] == ["trial-1", "trial-2"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for c in children)
    assert parent[0].data.params["threshold"] == "0.9" and children[1].data.params["trial"] == "2"
    assert parent[0].data.metrics["final_n_accepted"] == 8 and children[0].data.metrics["accepted"] == 4
    assert [a.path for a in client.list_artifacts(children[0].info.run_id, "trials")] == ["trials/trial_01.csv"]
    assert {a.path for a in client.list_artifacts(parent[0].info.run_id)} >= {"dataset.csv", "metrics.json", "model"}
    assert all(r.info.status == "FINISHED" for r in runs)
