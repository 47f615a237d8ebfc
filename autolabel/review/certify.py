"""`autolabel certify`: from a finished review of a drawn sample to certificate.json.

Refused, with the reason in one line: a review that is not of this run's sample, a run whose
accepted labels changed after the sample was drawn, rows outside the drawn sample, a review with
rows left unreviewed (leaving some out could bias the bound), and an overall bound from a sample
stratified per class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autolabel.review import bounds
from autolabel.review.folder import ReviewFolder
from autolabel.review.sample import RunLabels, Sample, load_sample, read_run_labels
from autolabel.review.verdicts import Verdict, read_review
from classification.errors import InputError
from classification.fileio import write_json

METHOD = "one-sided Clopper-Pearson"


@dataclass(frozen=True)
class CertifyRequest:
    run: Path                    # the run folder
    review: Path | None = None   # review.csv (default RUN/review/review.csv)
    confidence: float = 0.95     # the bound holds with this probability
    target: float | None = None  # precision to certify; reports the clean reviews still needed
    per_class: bool = False      # bounds per class only (what a stratified sample can give)

    def __post_init__(self):
        if not 0 < self.confidence < 1:
            raise InputError(f"--confidence must be in (0, 1), got {self.confidence}")
        if self.target is not None and not 0 < self.target <= 1:
            raise InputError(f"--target must be in (0, 1], got {self.target}")


def certify(req: CertifyRequest) -> dict:
    """Check the review against the run and its sample, then write and return the certificate."""
    folder = ReviewFolder.of(req.run)
    labels, sample = read_run_labels(req.run), load_sample(folder.sample)
    review = req.review or folder.csv
    check_sample(labels, sample)
    if sample.per_class and not req.per_class:
        raise InputError(f"the sample in {folder.sample} is stratified per class (--per-class): it bounds "
                         "each class's precision, not the overall one; certify with --per-class, or draw a "
                         f"uniform sample with `autolabel review {req.run}`")
    rows = check_rows(read_review(review, labels.classes), sample, review)
    cert = certificate(sample, rows, req)
    cert["review"] = str(Path(review).resolve())
    write_json(folder.certificate, cert)
    return cert


def check_sample(labels: RunLabels, sample: Sample) -> None:
    """The sample was drawn from this run, and its accepted labels have not changed since."""
    if sample.fingerprint != labels.fingerprint:
        raise InputError(f"the review sample in {labels.folder / 'review'} was drawn from another run "
                         f"({sample.run}); draw one for this run with `autolabel review {labels.folder}`")
    if sample.labels_digest != labels.digest:
        raise InputError(f"the accepted labels of {labels.folder} changed after the sample was drawn (then "
                         f"trial {sample.trial}, now trial {labels.trial}); the review no longer describes "
                         f"them: draw a new sample with `autolabel review {labels.folder}`")


def check_rows(rows: list[Verdict], sample: Sample, review: Path) -> list[Verdict]:
    """The review's rows in the sample's order: exactly the drawn items, every one reviewed."""
    drawn = {it["path"]: it["label"] for it in sample.items}
    outside = [r for r in rows if r.path not in drawn]
    if outside and 2 * len(outside) > len(rows):  # mostly other images: not a slip, another sample
        raise InputError(f"{review} is not a review of the sample drawn from {sample.run}: only "
                         f"{len(rows) - len(outside)} of its {len(rows)} rows were drawn (a review of another run?)")
    if outside:
        raise InputError(f"{review} has {len(outside)} row(s) not in the drawn sample (first: {outside[0].path}); "
                         "a certificate counts only the drawn labels: keep just the rows review.html lists")
    for r in rows:
        if r.label != drawn[r.path]:
            raise InputError(f"{review}: {r.path} is labelled {r.label!r} there but {drawn[r.path]!r} in the "
                             "drawn sample: a review of another run or of an older sample")
    by_path = {r.path: r for r in rows}
    open_ = [p for p in drawn if p not in by_path or not by_path[p].reviewed]
    if open_:
        raise InputError(f"{review} leaves {len(open_)} of the {len(drawn)} drawn labels unreviewed (first: "
                         f"{open_[0]}); review every one (leaving some out could bias the bound)")
    return [by_path[p] for p in drawn]


def certificate(sample: Sample, rows: list[Verdict], req: CertifyRequest) -> dict:
    """The numbers: overall (a uniform sample only) and per predicted class."""
    errors = sum(r.wrong for r in rows)
    overall = None if sample.per_class else _bound(len(rows), errors, req)
    per_class = {}
    for c in sample.classes:
        mine = [r for r in rows if r.label == c]
        if mine:  # a class the sample drew nothing from gets no bound
            per_class[c] = {"population": sample.population.get(c, 0), **_bound(len(mine), sum(r.wrong for r in mine), req)}
    return {"run": sample.run, "trial": sample.trial, "scope": sample.scope,
            "population": sum(sample.population.values()), "method": METHOD, "confidence": req.confidence,
            "n": len(rows), "errors": errors, "corrected": sum(bool(r.correct_label) for r in rows),
            "precision_hat": overall["precision_hat"] if overall else None,
            "precision_lower_bound": overall["precision_lower_bound"] if overall else None,
            "target": req.target,
            "certified": overall.get("certified") if overall else None,
            "more_reviews_needed": overall.get("more_reviews_needed") if overall else None,
            "per_class": per_class,
            "sample": {"id": sample.id, "seed": sample.seed, "size": sample.size, "stratified": sample.per_class,
                       "labels_digest": sample.labels_digest}}


def _bound(n: int, errors: int, req: CertifyRequest) -> dict:
    out = {"n": n, "errors": errors, "precision_hat": (n - errors) / n,
           "precision_lower_bound": bounds.lower_bound(n, errors, req.confidence)}
    if req.target is not None:
        out["certified"] = out["precision_lower_bound"] >= req.target
        out["more_reviews_needed"] = bounds.more_reviews(n, errors, req.target, req.confidence)
    return out
