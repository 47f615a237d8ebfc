"""RUN/review/: where `autolabel review` puts a drawn sample and everything made from it.

    sample.json                what was drawn, with its seed and a digest of the labels (sample.py)
    review.html                the review page (page.py)
    review.csv                 path,label,verdict,correct_label: empty verdicts to fill in, or kept ones
    label_studio.json          the same items as Label Studio import tasks (labelstudio.py)
    label_studio_config.xml    the Label Studio project's labelling interface
    certificate.json           written by `autolabel certify` (certify.py)
    reviewed_NN.csv            reviews fed back with --reviewed, copied here (feedback.py)
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from autolabel.review import labelstudio
from autolabel.review.page import render_page
from autolabel.review.sample import Sample, draw, load_sample, read_run_labels
from autolabel.review.verdicts import Verdict, carry_over, read_review, write_review
from classification.errors import InputError, first_line
from classification.fileio import write_json, write_text

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewFolder:
    root: Path  # RUN/review

    @classmethod
    def of(cls, run: str | Path) -> "ReviewFolder":
        return cls(Path(run) / "review")

    sample = property(lambda self: self.root / "sample.json")
    page = property(lambda self: self.root / "review.html")
    csv = property(lambda self: self.root / "review.csv")
    tasks = property(lambda self: self.root / "label_studio.json")
    ls_config = property(lambda self: self.root / "label_studio_config.xml")
    certificate = property(lambda self: self.root / "certificate.json")


def prepare(run: str | Path, size: int, seed: int = 0, per_class: bool = False) -> tuple[ReviewFolder, Sample, list[Verdict]]:
    """Draw a sample of the run's accepted pseudo-labels and write the review files for it. Verdicts
    already in RUN/review/review.csv for the same image and label are kept; a review.csv whose
    verdicts the new sample would drop is first kept aside as review-<its sample id>.csv."""
    labels = read_run_labels(run)
    sample = draw(labels, size, seed, per_class)
    folder = ReviewFolder.of(run)
    previous = _previous(folder, labels.classes)
    rows = carry_over(sample.items, previous)
    keep_aside(folder, folder.csv, rows)
    write_json(folder.sample, sample.to_json())
    write_review(folder.csv, rows)
    write_text(folder.page, render_page(sample, rows))
    write_text(folder.tasks, json.dumps(labelstudio.tasks(sample)) + "\n")
    write_text(folder.ls_config, labelstudio.labeling_config(sample.classes))
    return folder, sample, rows


def _previous(folder: ReviewFolder, classes: list[str]) -> list[Verdict]:
    if not folder.csv.is_file():
        return []
    try:
        return read_review(folder.csv, classes)
    except InputError as e:  # never overwrite a review we cannot read: it may be hours of work
        raise InputError(f"{e}; fix or move {folder.csv}, then draw the sample again") from None


def keep_aside(folder: ReviewFolder, path: Path, rows: list[Verdict]) -> None:
    """Before the review.csv at `path` is replaced by `rows`: if it holds verdicts that `rows` drop
    or change (or cannot be read), copy it to review-<its sample id>.csv beside it."""
    if not path.is_file():
        return
    new = {(r.path, r.label): (r.verdict, r.correct_label) for r in rows}
    try:
        old = read_review(path)
        if all(new.get((r.path, r.label)) == (r.verdict, r.correct_label) for r in old if r.reviewed):
            return
    except InputError:
        pass  # unreadable: keep it, whatever it holds
    try:
        old_id = load_sample(folder.sample).id
    except InputError:
        old_id = "previous"
    aside = folder.root / f"review-{old_id}.csv"
    try:
        shutil.copyfile(path, aside)
    except OSError as e:
        raise InputError(f"cannot keep the earlier review aside as {aside}: {first_line(e)}") from None
    _logger.warning("the earlier review's verdicts would be lost; it is kept as %s", aside)
