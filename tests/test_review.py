"""Review and certify without training: the bound's arithmetic, drawing samples, the review files,
Label Studio round trips and every refusal of `autolabel certify`, on run folders written as a
finished run leaves them (state.json, dataset.csv) over the bundled sample's real images."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from autolabel.cli import main
from autolabel.review import bounds
from autolabel.review.folder import prepare
from autolabel.review.sample import draw, load_sample, read_run_labels
from autolabel.review.verdicts import read_review

CLASSES = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "data" / "labeled").iterdir())


def write_run(folder: Path, sample: Path, n: int = 120, fingerprint: str = "run-a", wrong_every: int = 5) -> Path:
    """A finished run's folder over the first `n` pool images: their true class as pseudo-label,
    except every `wrong_every`-th, which gets the next class."""
    truth = pd.read_csv(sample / "unlabeled_truth.csv").head(n)
    labels = [c if i % wrong_every else CLASSES[(CLASSES.index(c) + 1) % 10] for i, c in enumerate(truth.label)]
    human = [(str(p), p.parent.name) for p in sorted((sample / "labeled").glob("*/*"))]
    rows = ([{"path": p, "label": c, "source": "human", "confidence": 1.0, "trial": 0} for p, c in human]
            + [{"path": str(sample / "unlabeled" / f), "label": c, "source": "pseudo", "confidence": 0.5 + i / (2 * n),
                "trial": 1} for i, (f, c) in enumerate(zip(truth.file, labels))])
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "dataset.csv", index=False)
    (folder / "state.json").write_text(json.dumps({"trial": 1, "finished": True, "fingerprint": fingerprint}))
    return folder


@pytest.fixture
def run(tmp_path, sample) -> Path:
    return write_run(tmp_path / "run", sample)


def truthful(run: Path, sample: Path, correct: bool = True) -> Path:
    """Fill RUN/review/review.csv as a reviewer who knows the truth would (with or without corrections)."""
    truth = pd.read_csv(sample / "unlabeled_truth.csv")
    true = dict(zip(truth.file, truth.label))
    review = pd.read_csv(run / "review" / "review.csv", keep_default_na=False)
    right = [true[Path(p).name] for p in review.path]
    review["verdict"] = np.where(review.label == right, "approve", "reject")
    review["correct_label"] = np.where((review.verdict == "reject") & correct, right, "")
    review.to_csv(run / "review" / "review.csv", index=False)
    return run / "review" / "review.csv"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# -- the bound ---------------------------------------------------------------------------------
def test_clopper_pearson_known_values():
    assert bounds.lower_bound(100, 3, 0.95) == pytest.approx(0.9243, abs=5e-5)
    assert bounds.lower_bound(29, 0, 0.95) >= 0.90 > bounds.lower_bound(28, 0, 0.95)
    assert bounds.lower_bound(29, 0, 0.95) == pytest.approx(0.05 ** (1 / 29))  # no error: alpha^(1/n) exactly
    assert bounds.lower_bound(10, 10) == 0.0
    assert bounds.more_reviews(0, 0, 0.90) == 29
    more = bounds.more_reviews(100, 3, 0.95)
    assert bounds.lower_bound(100 + more, 3) >= 0.95 > bounds.lower_bound(99 + more, 3)
    assert bounds.more_reviews(100, 3, 0.90) == 0 and bounds.more_reviews(100, 3, 1.0) is None


@pytest.mark.parametrize("n,p", [(20, 0.8), (100, 0.93), (50, 0.99)])
def test_the_bound_exceeds_the_truth_at_most_alpha_of_the_time(n, p):
    """Exactly, over every possible review outcome: P(bound > p) <= 1 - confidence."""
    errors = np.arange(n + 1)
    over = np.array([bounds.lower_bound(n, e, 0.95) > p for e in errors])
    assert binom.pmf(errors, n, 1 - p)[over].sum() <= 0.05


# -- drawing -------------------------------------------------------------------------------------
def test_a_sample_is_seeded_uniform_and_a_larger_one_extends_it(run):
    labels = read_run_labels(run)
    small, again, large = draw(labels, 30, seed=1), draw(labels, 30, seed=1), draw(labels, 50, seed=1)
    assert small.items == again.items and len(small.items) == 30 and small.id == again.id
    assert large.items[:30] == small.items
    assert [i["path"] for i in draw(labels, 30, seed=2).items] != [i["path"] for i in small.items]
    assert {i["path"] for i in large.items} <= set(labels.frame.path) and small.scope == "all accepted pseudo-labels of trial 1"
    strat = draw(labels, 3, seed=0, per_class=True)
    per = pd.Series([i["stratum"] for i in strat.items]).value_counts()
    assert all(i["stratum"] == i["label"] for i in strat.items) and per.max() == 3
    assert [i["rank"] for i in strat.items[:len(per)]] == [0] * len(per)  # round robin over the classes
    assert len(draw(labels, 10_000).items) == len(labels.frame)  # more than there are: all of them


def test_the_review_files(run):
    folder, sample, rows = prepare(run, 25, seed=3)
    assert [r.path for r in rows] == [i["path"] for i in sample.items] and not any(r.reviewed for r in rows)
    assert load_sample(folder.sample).to_json() == sample.to_json()
    page = folder.page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page) and "<link" not in page
    data = json.loads(re.search(r'<script id="review-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert len(data["items"]) == 25 and all(i["thumb"].startswith("data:image/jpeg;base64,") for i in data["items"])
    assert data["classes"] == CLASSES and data["sample_id"] == sample.id
    tasks = json.loads(folder.tasks.read_text())
    assert [t["data"]["path"] for t in tasks] == [i["path"] for i in sample.items]
    assert [t["predictions"][0]["score"] for t in tasks] == [i["confidence"] for i in sample.items]
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == [sample.items[0]["label"]]
    assert folder.ls_config.read_text().count("<Choice ") == len(CLASSES) + 1


def test_drawing_again_keeps_the_verdicts_given(run, sample, capsys):
    prepare(run, 20, seed=0)
    truthful(run, sample)
    before = read_review(run / "review" / "review.csv")
    assert main(["review", str(run), "--sample", "30", "--seed", "0"]) == 0
    assert "kept 20 verdict(s)" in capsys.readouterr().out
    after = read_review(run / "review" / "review.csv")
    assert after[:20] == before and not any(r.reviewed for r in after[20:])
    assert main(["review", str(run), "--sample", "30", "--seed", "9"]) == 0  # another draw drops some
    assert len(list((run / "review").glob("review-*.csv"))) == 1


# -- Label Studio ---------------------------------------------------------------------------------
def test_a_label_studio_export_becomes_review_csv(run, tmp_path, capsys):
    folder, sample, _ = prepare(run, 6, seed=0)
    tasks = json.loads(folder.tasks.read_text())
    other = [c for c in CLASSES if c != tasks[1]["data"]["proposed"]][0]

    def annotate(choice, cancelled=False):
        return [{"was_cancelled": cancelled, "updated_at": "2025-01-01T00:00:00Z",
                 "result": [{"from_name": "class", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]}]

    tasks[0]["annotations"] = annotate(tasks[0]["data"]["proposed"])
    tasks[1]["annotations"] = annotate(other)
    tasks[2]["annotations"] = annotate("none of these")
    tasks[3]["annotations"] = annotate(other, cancelled=True)
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{**t, "id": n} for n, t in enumerate(tasks[:5])]))
    assert main(["review", "import", str(run), "--label-studio", str(export)]) == 0
    rows = read_review(folder.csv)
    assert [(r.verdict, r.correct_label) for r in rows] == [("approve", ""), ("reject", other), ("reject", "")] + [("", "")] * 3
    minimal = [{"path": t["data"]["path"], "proposed": t["data"]["proposed"], "class": t["data"]["proposed"]} for t in tasks]
    export.write_text(json.dumps(minimal))  # JSON-MIN
    assert main(["review", "import", str(run), "--label-studio", str(export)]) == 0
    assert all(r.verdict == "approve" for r in read_review(folder.csv))
    assert "kept as" in capsys.readouterr().err and len(list(folder.root.glob("review-*.csv"))) == 1
    export.write_text(json.dumps([{"data": {"path": "/elsewhere/x.jpg"}}]))
    assert main(["review", "import", str(run), "--label-studio", str(export)]) == 2
    assert "not in the drawn sample" in error_line(capsys)


# -- certify --------------------------------------------------------------------------------------
def test_certify_counts_the_review(run, sample, capsys):
    prepare(run, 40, seed=0)
    review = truthful(run, sample)
    rows = read_review(review)
    errors = sum(r.verdict == "reject" for r in rows)
    assert main(["certify", str(run), "--review", str(review), "--target", "0.9", "--no-mlflow"]) == 0
    cert = json.loads((run / "review" / "certificate.json").read_text())
    assert (cert["n"], cert["errors"], cert["corrected"]) == (40, errors, errors) and errors > 0
    assert cert["precision_hat"] == (40 - errors) / 40
    assert cert["precision_lower_bound"] == pytest.approx(bounds.lower_bound(40, errors, 0.95))
    assert cert["scope"] == "all accepted pseudo-labels of trial 1" and cert["population"] == 120
    assert sum(c["n"] for c in cert["per_class"].values()) == 40
    assert sum(c["errors"] for c in cert["per_class"].values()) == errors
    assert cert["certified"] is False and cert["more_reviews_needed"] == bounds.more_reviews(40, errors, 0.9)
    out = capsys.readouterr().out
    assert f"precision >= {cert['precision_lower_bound']:.2%}" in out and "--sample" in out


def edit(review: Path, fn) -> None:
    frame = pd.read_csv(review, keep_default_na=False)
    fn(frame).to_csv(review, index=False)


@pytest.mark.parametrize("case,message", [
    ("another-run", "was drawn from another run"),
    ("review-of-another-run", "of its 30 rows were drawn (a review of another run?)"),
    ("labels-changed", "changed after the sample was drawn"),
    ("row-not-in-sample", "1 row(s) not in the drawn sample"),
    ("other-label", "in the drawn sample: a review of another run"),
    ("unreviewed", "leaves 2 of the 30 drawn labels unreviewed"),
    ("stratified", "stratified per class"),
    ("bad-verdict", "verdict 'maybe'; valid: approve, reject"),
    ("correction-on-approve", "a correction is a reject"),
    ("unknown-class", "unknown class 'unicorn'"),
    ("twice", "has more than one row"),
])
def test_certify_refuses(case, message, run, sample, tmp_path, capsys):
    prepare(run, 30, seed=0, per_class=case == "stratified")
    review = truthful(run, sample)
    if case == "another-run":  # the review folder copied from a run on other images or settings
        other = write_run(tmp_path / "other", sample, fingerprint="run-b")
        shutil.copytree(run / "review", other / "review")
        run = other
    elif case == "review-of-another-run":
        other = write_run(tmp_path / "other", sample, n=200, fingerprint="run-b")
        prepare(other, 30, seed=5)
        review = truthful(other, sample)
    elif case == "labels-changed":  # e.g. resumed with more trials after the sample was drawn
        edit(run / "dataset.csv", lambda f: f.assign(label=np.where(f.index == len(f) - 1, _other(f.label.iloc[-1]), f.label)))
    elif case == "row-not-in-sample":
        drawn = set(pd.read_csv(review).path)
        spare = next(p for p in read_run_labels(run).frame.itertuples() if p.path not in drawn)
        edit(review, lambda f: pd.concat([f, pd.DataFrame([{"path": spare.path, "label": spare.label,
                                                            "verdict": "approve", "correct_label": ""}])]))
    elif case == "other-label":
        edit(review, lambda f: f.assign(label=np.where(f.index == 0, _other(f.label[0]), f.label),
                                        verdict="approve", correct_label=""))
    elif case == "unreviewed":
        edit(review, lambda f: f.assign(verdict=np.where(f.index < 2, "", f.verdict),
                                        correct_label=np.where(f.index < 2, "", f.correct_label)))
    elif case == "bad-verdict":
        edit(review, lambda f: f.assign(verdict=np.where(f.index == 3, "maybe", f.verdict)))
    elif case == "correction-on-approve":
        edit(review, lambda f: f.assign(verdict="approve", correct_label=np.where(f.index == 0, _other(f.label[0]), "")))
    elif case == "unknown-class":
        edit(review, lambda f: f.assign(verdict="reject", correct_label=np.where(f.index == 0, "unicorn", "")))
    elif case == "twice":
        edit(review, lambda f: pd.concat([f, f.head(1)]))
    assert main(["certify", str(run), "--review", str(review), "--no-mlflow"]) == 2
    assert message in error_line(capsys)
    assert not (run / "review" / "certificate.json").exists()


def _other(label: str) -> str:
    return CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)]


def test_a_stratified_sample_certifies_each_class(run, sample):
    prepare(run, 4, seed=0, per_class=True)
    review = truthful(run, sample, correct=False)
    assert main(["certify", str(run), "--review", str(review), "--per-class", "--target", "0.5", "--no-mlflow"]) == 0
    cert = json.loads((run / "review" / "certificate.json").read_text())
    assert cert["precision_lower_bound"] is None and cert["scope"].startswith("the accepted pseudo-labels of each class")
    assert all(c["n"] == min(4, c["population"]) for c in cert["per_class"].values()) and cert["corrected"] == 0
    assert all(c["precision_lower_bound"] == pytest.approx(bounds.lower_bound(c["n"], c["errors"]))
               for c in cert["per_class"].values())


def test_review_refuses_a_run_that_has_not_finished(run, capsys):
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "finished": False}))
    assert main(["review", str(run)]) == 2
    assert "has not finished" in error_line(capsys)
    assert main(["review", str(run.parent / "nothing-here")]) == 2
    assert "no run" in error_line(capsys)


def test_usage_mistakes_are_short_messages_not_tracebacks(capsys):
    assert main(["certify"]) == 2
    err = capsys.readouterr().err
    assert "Missing argument 'run'" in err and "Traceback" not in err
    assert main(["review"]) == 2  # no run: the command's help
    assert "autolabel review RUN" in " ".join(capsys.readouterr().out.split())


def test_a_missing_review_stops_a_new_run_before_its_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--no-mlflow", "--reviewed", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "--reviewed" in error_line(capsys) and not out.exists()


def test_tracking_problems_are_warnings(run, sample, capsys):
    prepare(run, 10, seed=0)
    review = truthful(run, sample)
    assert main(["certify", str(run), "--review", str(review)]) == 0  # a run tracked nowhere
    assert "certificate not logged" in capsys.readouterr().err
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "mlflow_run_id": "0123456789abcdef"}))
    assert main(["certify", str(run), "--review", str(review), "--tracking-uri", "http://127.0.0.1:9"]) == 0
    err = capsys.readouterr().err
    assert "certificate not logged to MLflow run 0123456789abcdef at http://127.0.0.1:9" in err
    assert (run / "review" / "certificate.json").is_file()
