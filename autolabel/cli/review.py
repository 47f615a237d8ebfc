"""`autolabel review RUN` draws a sample of a run's pseudo-labels and writes the review page (and
review.csv, Label Studio tasks) in RUN/review/; `autolabel review import RUN --label-studio X`
turns a Label Studio export into review.csv; `autolabel certify RUN --review review.csv` bounds
the precision of the run's accepted labels from the finished review."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from autolabel.review.certify import CertifyRequest, certify as certify_run
from autolabel.review.folder import ReviewFolder, keep_aside, prepare
from autolabel.review.labelstudio import review_from_export
from autolabel.review.sample import load_sample, read_run_labels
from autolabel.review.track import log_certificate
from autolabel.review.verdicts import write_review

RUN = typer.Argument(..., help="The run folder (--out of a finished `autolabel` run).")


class DrawByDefault(TyperGroup):
    """`autolabel review RUN ...` means `autolabel review draw RUN ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["draw", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=DrawByDefault, no_args_is_help=True,
                  help="Review a random sample of a run's pseudo-labels: `autolabel review RUN [--sample 100] "
                       "[--seed 0] [--per-class]` writes RUN/review/review.html.")


@app.command("draw")
def draw(
    run: Path = RUN,
    sample: int = typer.Option(100, "--sample", help="How many labels to draw (per class with --per-class)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draw; with the same seed a larger --sample extends a smaller one."),
    per_class: bool = typer.Option(False, "--per-class", help="Stratify by predicted class: a bound per class, none overall."),
):
    """Draw the sample and write review.html, review.csv, label_studio.json and sample.json."""
    folder, drawn, rows = prepare(run, sample, seed, per_class)
    how = f"{sample} per predicted class" if per_class else "uniformly at random"
    typer.echo(f"drew {len(drawn.items)} of the {sum(drawn.population.values())} accepted pseudo-labels of "
               f"trial {drawn.trial} ({how}, seed {seed})")
    kept = sum(r.reviewed for r in rows)
    if kept:
        typer.echo(f"kept {kept} verdict(s) of the earlier review for the same images")
    typer.echo(f"review page: {folder.page.resolve().as_uri()}  (Save downloads review.csv)")
    typer.echo(f"or fill in {folder.csv} by hand, or review in Label Studio: import {folder.tasks} into a "
               f"project labelled with {folder.ls_config}, then `autolabel review import {run} --label-studio EXPORT.json`")
    typer.echo(f"then: autolabel certify {run} --review review.csv")


@app.command("import")
def import_label_studio(
    run: Path = RUN,
    label_studio: Path = typer.Option(..., "--label-studio", help="A Label Studio JSON (or JSON-MIN) export of label_studio.json's tasks."),
    out: Optional[Path] = typer.Option(None, "--out", help="review.csv to write (default: RUN/review/review.csv)."),
):
    """Turn a Label Studio export of the sample's tasks into review.csv."""
    folder = ReviewFolder.of(run)
    rows = review_from_export(label_studio, load_sample(folder.sample))
    target = out or folder.csv
    keep_aside(folder, target, rows)
    write_review(target, rows)
    rejected = sum(r.wrong for r in rows)
    typer.echo(f"{sum(r.reviewed for r in rows)} of {len(rows)} reviewed, {rejected} rejected -> {target}")


def certify(
    run: Path = RUN,
    review: Optional[Path] = typer.Option(None, "--review", help="The finished review.csv (default: RUN/review/review.csv)."),
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence of the lower bound."),
    target: Optional[float] = typer.Option(None, "--target", help="Precision to certify: says how many more clean reviews it takes."),
    per_class: bool = typer.Option(False, "--per-class", help="Bounds per class only (what a --per-class sample gives)."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log the certificate to the run's MLflow parent."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store (default: the run's, else $MLFLOW_TRACKING_URI)."),
):
    """Bound the precision of a run's accepted pseudo-labels from a finished review of its sample."""
    cert = certify_run(CertifyRequest(run, review, confidence, target, per_class))
    for line in describe(cert, run):
        typer.echo(line)
    path = ReviewFolder.of(run).certificate
    typer.echo(f"certificate: {path}")
    if mlflow:
        labels = read_run_labels(run)
        where = log_certificate(cert, path, labels.mlflow_run_id, tracking_uri or labels.mlflow_tracking_uri)
        if where:
            typer.echo(where)


def describe(cert: dict, run: Path) -> list[str]:
    """The certificate in a few lines: the bound and its scope, the target, each class."""
    level = f"{cert['confidence']:.0%} confidence, {cert['method']}"
    lines = [f"{cert['n']} reviewed, {cert['errors']} error(s) ({cert['corrected']} with the right class given)"]
    if cert["precision_lower_bound"] is not None:
        lines.append(f"precision >= {cert['precision_lower_bound']:.2%} ({level}; observed {cert['precision_hat']:.1%}) "
                     f"for {cert['scope']} ({cert['population']} labels)")
    if cert["target"] is not None and cert["more_reviews_needed"] is not None:
        lines.append(_target_line(cert, cert, run, "overall"))
    if cert["per_class"]:
        lines.append(f"per class ({level}):")
    for c, s in cert["per_class"].items():
        lines.append(f"  {c:<14} {s['n']:>4} reviewed {s['errors']:>3} error(s)  precision >= "
                     f"{s['precision_lower_bound']:.1%} (observed {s['precision_hat']:.1%}, {s['population']} labels)")
        if cert["per_class"] and cert["precision_lower_bound"] is None and cert["target"] is not None:
            lines.append("    " + _target_line(cert, s, run, c))
    return lines


def _target_line(cert: dict, s: dict, run: Path, what: str) -> str:
    target = f"target {cert['target']:.0%} ({what})"
    if s["certified"]:
        return f"{target}: certified"
    more = s["more_reviews_needed"]
    if more is None:
        return f"{target}: no number of reviews certifies it"
    return (f"{target}: not yet; {more} more review(s) with no new error would certify it "
            f"(`autolabel review {run} --sample {cert['sample']['size'] + more} --seed {cert['sample']['seed']}` "
            "extends this sample and keeps its verdicts)")


def register(root: typer.Typer) -> None:
    """Add `review` (with `import`) and `certify` to the root command."""
    root.add_typer(app, name="review")
    root.command("certify")(certify)
