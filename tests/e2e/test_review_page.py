"""The review page in a real browser: a small run on the bundled sample, `autolabel review`, then
review.html opened from its file:// URL in headless Chromium, reviewed with keys and clicks (two
items rejected, one of them with its right class), saved with the page's button (the download
captured), certified, and the certificate's counts checked, in the file and in MLflow."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from autolabel.cli import main
from autolabel.review.bounds import lower_bound
from autolabel.review.verdicts import read_review
from tests.e2e.cdp import Chromium
from tests.e2e.test_ui import assert_rendered, chromium
from tests.review_run import fresh_copy, tiny_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIZE = 20                  # labels drawn for review
REJECT, CORRECT = 3, 6     # the card rejected by a click on its button, the one given its right class by key
SHOT = 12                  # the screenshot is taken with this many reviewed


def counts(page: Chromium) -> str:
    return page.eval("document.getElementById('counts').textContent")


def test_review_page_reviews_saves_and_certifies(tmp_path_factory, cache_dir, tmp_path, capsys):
    browser = chromium()
    run = fresh_copy(tiny_run(tmp_path_factory, cache_dir), tmp_path / "run")
    assert main(["review", str(run), "--sample", str(SIZE), "--seed", "0"]) == 0
    sample = json.loads((run / "review" / "sample.json").read_text())
    classes = sample["classes"]
    other = classes[(classes.index(sample["items"][CORRECT]["label"]) + 1) % len(classes)]
    shots, downloads = tmp_path / "screenshots", tmp_path / "downloads"
    shots.mkdir()

    with Chromium(browser, tmp_path / "profile") as page:
        page.download_to(downloads)
        page.open((run / "review" / "review.html").as_uri())
        assert page.eval("document.querySelectorAll('.card').length") == SIZE
        assert counts(page).startswith(f"0 / {SIZE} reviewed")
        for i in range(SIZE):  # the page starts on the first card and moves on after each verdict
            if i == SHOT:  # mid-review, from the top: the README's picture
                page.eval("window.scrollTo(0, 0)")
                page.screenshot(shots / "review_page.png")
                assert counts(page).startswith(f"{SHOT} / {SIZE} reviewed")
            if i == REJECT:
                page.click(f"#item-{i} .no")   # a click: no class fits
                page.key("ArrowRight")
            elif i == CORRECT:
                page.key(str((classes.index(other) + 1) % 10))  # the right class by its number
            else:
                page.key("a")
        assert counts(page) == f"{SIZE} / {SIZE} reviewed · {SIZE - 2} approved · 2 rejected (1 with the right class)"
        assert page.eval(f"document.querySelector('#item-{CORRECT} .verdict').textContent") == f"✗ really: {other}"
        page.key("Home")  # back to the first card, at the top of the page
        assert page.eval("[window.scrollY, document.activeElement.id]") == [0, "item-0"]
        page.click("#save")
        assert page.wait_download()["suggestedFilename"] == "review.csv"
        page.open((run / "review" / "review.html").as_uri())  # a closed tab loses nothing
        assert counts(page).startswith(f"{SIZE} / {SIZE} reviewed · {SIZE - 2} approved")
        # self-contained: nothing but the file itself, its inlined images and the saved blob
        assert all(u.startswith(("file:", "data:", "blob:")) for u in page.requests()), page.requests()

    keep = os.environ.get("AUTOLABEL_E2E_SCREENSHOTS")
    if keep:  # e.g. docs/images (the README's picture), or CI's artifacts
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shots / "review_page.png", Path(keep) / "review_page.png")
    assert_rendered(shots / "review_page.png")

    saved = downloads / "review.csv"
    rows = read_review(saved, classes)
    assert [r.path for r in rows] == [i["path"] for i in sample["items"]]
    assert [(r.verdict, r.correct_label) for r in rows if r.verdict != "approve"] == [("reject", ""), ("reject", other)]
    assert rows[REJECT].verdict == "reject" and rows[CORRECT].correct_label == other

    assert main(["certify", str(run), "--review", str(saved), "--target", "0.5"]) == 0
    out = capsys.readouterr().out
    cert = json.loads((run / "review" / "certificate.json").read_text())
    assert (cert["n"], cert["errors"], cert["corrected"]) == (SIZE, 2, 1)
    assert cert["precision_hat"] == (SIZE - 2) / SIZE
    assert cert["precision_lower_bound"] == pytest.approx(lower_bound(SIZE, 2, 0.95))
    assert cert["scope"] == "all accepted pseudo-labels of trial 1" and cert["certified"] is True
    assert "logged to MLflow run" in out

    from mlflow import MlflowClient

    state = json.loads((run / "state.json").read_text())
    logged = MlflowClient(state["mlflow_tracking_uri"]).get_run(state["mlflow_run_id"])
    assert logged.data.metrics["review_errors"] == 2 and logged.data.metrics["review_n"] == SIZE
    assert logged.data.metrics["review_precision_lower_bound"] == pytest.approx(cert["precision_lower_bound"])
    assert logged.data.tags["review.scope"] == cert["scope"]
