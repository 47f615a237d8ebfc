"""review.csv: what the review page saves and what a spreadsheet user fills in by hand.

    path,label,verdict,correct_label

`label` is the proposed pseudo-label, `verdict` is `approve` or `reject` (empty: not reviewed yet)
and `correct_label` is optional on a reject: the class the image really belongs to. A reject
without it says the image belongs to none of the run's classes, or to one the reviewer could not
tell.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from classification.errors import InputError, first_line
from classification.fileio import write_text

COLUMNS = ["path", "label", "verdict", "correct_label"]
VERDICTS = ("approve", "reject")


@dataclass(frozen=True)
class Verdict:
    """One row of review.csv."""
    path: str                 # the image, as dataset.csv names it
    label: str                # the proposed pseudo-label
    verdict: str = ""         # "approve" | "reject" | "" (not reviewed)
    correct_label: str = ""   # on a reject: the right class, if the reviewer gave one

    @property
    def reviewed(self) -> bool:
        return self.verdict != ""

    @property
    def wrong(self) -> bool:
        return self.verdict == "reject"

    @property
    def human_label(self) -> str | None:
        """The label a person vouches for: the proposal if approved, the correction if given."""
        return self.label if self.verdict == "approve" else (self.correct_label or None)


def read_review(path: str | Path, classes: list[str] | None = None) -> list[Verdict]:
    """The rows of a review.csv, checked: verdicts known, corrections only on rejects, classes
    known (when `classes` is given), each path once. Bad input is a one-line error."""
    path = Path(path)
    try:
        # utf-8-sig: spreadsheets often save a byte-order mark
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"review {path} does not exist") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InputError(f"cannot read review {path}: {first_line(e)}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in COLUMNS[:3] if c not in frame.columns]
    if missing:
        raise InputError(f"review {path} lacks the column(s) {', '.join(missing)}; "
                         f"review.csv has the columns {','.join(COLUMNS)}")
    if "correct_label" not in frame.columns:
        frame["correct_label"] = ""
    rows = [Verdict(p.strip(), lab.strip(), v.strip().lower(), c.strip())
            for p, lab, v, c in zip(frame.path, frame.label, frame.verdict, frame.correct_label)]
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        _check_row(path, line, row, classes)
    twice = pd.Series([r.path for r in rows]).duplicated()
    if twice.any():
        raise InputError(f"review {path}: {rows[int(twice.idxmax())].path} has more than one row; keep one")
    return rows


def _check_row(path: Path, line: int, row: Verdict, classes: list[str] | None) -> None:
    where = f"review {path} line {line}"
    if not row.path:
        raise InputError(f"{where}: empty path")
    if row.verdict not in ("", *VERDICTS):
        raise InputError(f"{where}: verdict {row.verdict!r}; valid: {', '.join(VERDICTS)} (or empty: not reviewed)")
    if row.correct_label and row.verdict != "reject":
        raise InputError(f"{where}: correct_label {row.correct_label!r} on a row that is not a reject; "
                         "a correction is a reject with correct_label")
    if row.correct_label and row.correct_label == row.label:
        raise InputError(f"{where}: correct_label equals the proposed label {row.label!r}; approve it instead")
    if classes is not None:
        for name in (row.label, row.correct_label):
            if name and name not in classes:
                raise InputError(f"{where}: unknown class {name!r}; valid: {', '.join(classes)}")


def write_review(path: str | Path, rows: list[Verdict]) -> None:
    """review.csv, atomically (the csv module's quoting, as the review page writes it)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(COLUMNS)
    out.writerows([r.path, r.label, r.verdict, r.correct_label] for r in rows)
    write_text(path, buf.getvalue())


def carry_over(items: list[dict], previous: list[Verdict]) -> list[Verdict]:
    """The rows for a freshly drawn sample, keeping any verdict already given on the same image
    with the same proposed label (a larger sample with the same seed extends the smaller one)."""
    done = {(r.path, r.label): r for r in previous if r.reviewed}
    return [done.get((it["path"], it["label"]), Verdict(it["path"], it["label"])) for it in items]
