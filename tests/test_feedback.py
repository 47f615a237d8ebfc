"""Corrections fed back on the bundled sample: a small finished run, a review of its sample by a
reviewer who knows the truth (data/unlabeled_truth.csv), then `autolabel --resume RUN --reviewed
review.csv`, against the same resume with the review left blank. The next trial's pseudo-labels
are at least as precise with the corrections as without, reviewed images carry their human label
(source human-reviewed), rejected ones without a correction get none, and the old review no
longer certifies the changed labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from autolabel import hooks
from autolabel.cli import main
from autolabel.review.verdicts import read_review
from tests.conftest import SAMPLE
from tests.review_run import fresh_copy, tiny_run

pytestmark = pytest.mark.slow

SIZE = 150           # labels reviewed
NO_CORRECTION = 4    # every 4th wrong label is rejected without its right class


def review_with_truth(run: Path) -> pd.DataFrame:
    """RUN/review/review.csv filled by a reviewer who knows the truth."""
    truth = pd.read_csv(SAMPLE / "unlabeled_truth.csv")
    true = dict(zip(truth.file, truth.label))
    review = pd.read_csv(run / "review" / "review.csv", keep_default_na=False)
    right = np.array([true[Path(p).name] for p in review.path])
    wrong = np.flatnonzero(review.label.to_numpy() != right)
    review["verdict"] = np.where(review.label == right, "approve", "reject")
    review["correct_label"] = np.where(review.verdict == "reject", right, "")
    review.loc[wrong[::NO_CORRECTION], "correct_label"] = ""
    review.to_csv(run / "review" / "review.csv", index=False)
    return review


def resume(run: Path, cache_dir: Path, *more: str) -> int:
    return main(["--quiet", "--no-mlflow", "--resume", str(run), "--reviewed", str(run / "review" / "review.csv"),
                 "--cache-dir", str(cache_dir), *more])


def interrupt_at(target: str):
    def listener(point: str, trial: int | None) -> None:
        if f"{point}:{trial}" == target:
            raise KeyboardInterrupt  # as Ctrl-C there would
    return listener


def trial_csv(run: Path, t: int) -> pd.DataFrame:
    return pd.read_csv(run / "trials" / f"trial_{t:02d}.csv", keep_default_na=False)


def correct(rows: pd.DataFrame, column: str) -> pd.Series:
    """Whether each row's `column` is the pool image's true class (data/unlabeled_truth.csv)."""
    truth = pd.read_csv(SAMPLE / "unlabeled_truth.csv")
    true = dict(zip(truth.file, truth.label))
    return rows[column] == rows.path.map(lambda p: true[Path(p).name])


def trial(run: Path, t: int) -> dict:
    return json.loads((run / "metrics.json").read_text())["trials"][t - 1]


def test_corrections_feed_back_into_the_next_trial(tmp_path_factory, cache_dir, tmp_path, capsys):
    done = tiny_run(tmp_path_factory, cache_dir)
    fed, blank = fresh_copy(done, tmp_path / "fed"), fresh_copy(done, tmp_path / "blank")
    for run in (fed, blank):
        assert main(["review", str(run), "--sample", str(SIZE), "--seed", "0"]) == 0
    review = review_with_truth(fed)
    assert main(["certify", str(fed), "--no-mlflow"]) == 0  # the review certifies trial 1's labels

    assert resume(blank, cache_dir) == 0  # the same next trial without any verdict
    stop = hooks.listen(interrupt_at("train:2"))
    try:  # stopped in trial 2's training, once the review has been taken in
        assert resume(fed, cache_dir) == 130
    finally:
        stop()
    assert "fed back: human labels from trial 2 on (trial budget 2)" in capsys.readouterr().out
    assert not json.loads((fed / "state.json").read_text())["finished"]
    # a plain --resume goes on with the review: the run holds it (config.yaml, RUN/review/reviewed_01.csv)
    assert main(["--quiet", "--no-mlflow", "--resume", str(fed), "--cache-dir", str(cache_dir)]) == 0
    unseen = ~trial_csv(fed, 2).path.isin(review.path)  # the images nobody reviewed
    with_review, without = (correct(trial_csv(run, 2)[unseen], "prediction").mean() for run in (fed, blank))
    assert with_review >= without, (with_review, without)  # the next trial's model, on the same images
    pool_labels = [correct(pd.read_csv(run / "dataset.csv").query("source != 'human'"), "label").mean()
                   for run in (fed, blank)]
    assert pool_labels[0] >= pool_labels[1], pool_labels  # what dataset.csv gives for the pool

    dataset = pd.read_csv(fed / "dataset.csv", keep_default_na=False)
    by_person = dataset[dataset.source == "human-reviewed"].set_index("path")
    rows = {r.path: r for r in read_review(fed / "review" / "reviewed_01.csv")}
    vouched = {p: r.human_label for p, r in rows.items() if r.human_label}
    assert by_person.label.to_dict() == vouched and (by_person.trial == 2).all() and (by_person.confidence == 1).all()
    corrected = review[review.correct_label != ""]
    assert len(corrected) > 0 and all(by_person.label[p] == c for p, c in zip(corrected.path, corrected.correct_label))
    refused = set(review.path[(review.verdict == "reject") & (review.correct_label == "")])
    assert refused and not refused & set(dataset.path)  # rejected without a correction: no label at all
    assert not set(review.path) & set(dataset.path[dataset.source == "pseudo"])
    assert trial(fed, 2)["human_reviewed"] == len(vouched) and trial(fed, 2)["review_rejected"] == len(refused)

    saved = yaml.safe_load((fed / "config.yaml").read_text())
    assert saved["loop"]["n_trials"] == 2 and saved["data"]["reviewed"] == [str(fed / "review" / "reviewed_01.csv")]
    state = json.loads((fed / "state.json").read_text())
    assert state["finished"] and state["trial"] == 2
    capsys.readouterr()
    assert main(["certify", str(fed), "--no-mlflow"]) == 2  # the labels changed after the sample was drawn
    assert "changed after the sample was drawn" in capsys.readouterr().err
    assert main(["--resume", str(fed)]) == 0 and "already finished" in capsys.readouterr().out


def test_resume_with_a_review_refuses_other_changes(tmp_path_factory, cache_dir, tmp_path, capsys):
    run = fresh_copy(tiny_run(tmp_path_factory, cache_dir), tmp_path / "run")
    assert main(["review", str(run), "--sample", "5"]) == 0
    capsys.readouterr()
    assert resume(run, cache_dir, "--threshold", "0.5") == 2
    assert "the saved run has loop.threshold unset, not 0.5" in capsys.readouterr().err
    assert resume(run, cache_dir, "--n-trials", "1") == 2
    assert "give --n-trials above 1" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("path,label,verdict,correct_label\n/not/in/pool.jpg,cat,approve,\n")
    assert main(["--resume", str(run), "--reviewed", str(tmp_path / "bad.csv")]) == 2
    assert "is not one of this run's unlabelled images" in capsys.readouterr().err
    assert json.loads((run / "state.json").read_text())["finished"]  # refused before anything changed
    assert "reviewed" not in yaml.safe_load((run / "config.yaml").read_text())["data"]


def test_a_new_run_takes_a_review_from_its_first_trial(tmp_path, cache_dir, capsys):
    """A small pool (a CSV of 30 images) and a review of 6 of them, 2 corrected and 1 refused."""
    truth = pd.read_csv(SAMPLE / "unlabeled_truth.csv").head(30)
    paths = [str(SAMPLE / "unlabeled" / f) for f in truth.file]
    pd.DataFrame({"path": paths}).to_csv(tmp_path / "pool.csv", index=False)
    wrong = {"airplane": "ship", "ship": "airplane"}
    rows = [(paths[i], truth.label[i], "approve", "") for i in range(3)]
    rows += [(paths[i], wrong.get(truth.label[i], "airplane"), "reject", truth.label[i]) for i in (3, 4)]
    rows += [(paths[5], truth.label[5], "reject", "")]
    pd.DataFrame(rows, columns=["path", "label", "verdict", "correct_label"]).to_csv(tmp_path / "review.csv", index=False)
    out = tmp_path / "run"
    assert main(["--quiet", "--no-mlflow", "--data-clean", str(SAMPLE / "labeled"), "--data-raw", str(tmp_path / "pool.csv"),
                 "--reviewed", str(tmp_path / "review.csv"), "--n-trials", "1", "--img-size", "64",
                 "--out", str(out), "--cache-dir", str(cache_dir)]) == 0
    dataset = pd.read_csv(out / "dataset.csv", keep_default_na=False)
    by_person = dataset[dataset.source == "human-reviewed"]
    assert list(by_person.path) == paths[:5] and list(by_person.label) == list(truth.label[:5])
    assert (by_person.trial == 1).all() and paths[5] not in set(dataset.path)
    assert (out / "review" / "reviewed_01.csv").read_bytes() == (tmp_path / "review.csv").read_bytes()
