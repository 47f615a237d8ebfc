"""`autolabel grid --param threshold=0.7,0.8 --param policy=fixed,flexmatch`: the loop for every
combination, ranked; one MLflow parent run with a child per combination."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from autolabel.cli.common import open_cache, print_skips, progress_enabled
from autolabel.grid import METRICS, GridJob, expand, run_grid
from autolabel.run import RunInputs
from autolabel.settings import resolve_configs, resolve_sources
from autolabel.tracking import flatten
from autolabel.tracking_tools import GridTracker, tracking_choice
from classification.errors import InputError


def grid(
    ctx: typer.Context,
    param: list[str] = typer.Option(..., "--param", help="key=v1,v2 (repeatable): a loop or train setting and its "
                                    "values, e.g. threshold=0.7,0.9, policy=fixed,flexmatch or train.lr=0.001,0.003."),
    config: Optional[Path] = typer.Option(None, help="YAML with train: and loop: sections; the grid varies it."),
    data_clean: Optional[Path] = typer.Option(None, "--data-clean", help="Human labels (default: the bundled sample)."),
    data_raw: Optional[Path] = typer.Option(None, "--data-raw", help="Unlabelled images."),
    truth: Optional[Path] = typer.Option(None, help="file,label CSV for the pool: scores pseudo-labels (precision)."),
    test: Optional[Path] = typer.Option(None, help="Labelled test images: only scored (test_accuracy)."),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", help="Trial budget of every combination (default: 10)."),
    img_size: Optional[int] = typer.Option(None, help="Input size (default: the model's)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/grid-<timestamp>)."),
    metric: Optional[str] = typer.Option(None, help="Rank by test_accuracy | precision | val_macro_f1 "
                                         "(default: test_accuracy with a test split, else val_macro_f1)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache folder (default: ~/.cache/autolabel)."),
    mlflow: Optional[bool] = typer.Option(None, "--mlflow/--no-mlflow", help="Track the grid in MLflow (default: on)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow server or store."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment (default: autolabel)."),
):
    """Run the loop for every combination of --param values and rank the results."""
    train_cfg, loop_cfg = resolve_configs(config, {"img_size": img_size}, {"n_trials": n_trials})
    combos = expand(param, train_cfg, loop_cfg)  # every value checked before any image is read
    data_clean, data_raw, truth, test = resolve_sources(data_clean, data_raw, truth, test)
    metric = _metric(metric, test, truth)
    out = _grid_dir(out)
    sources = {"data_clean": str(data_clean), "data_raw": str(data_raw),
               "test": str(test) if test else None, "truth": str(truth) if truth else None}
    inputs = RunInputs.load(sources)
    tracking = tracking_choice(mlflow, tracking_uri, experiment, ctx.parent.params if ctx.parent else None)
    varied = [p for p, _ in combos[0].settings]
    tracker = _tracker(tracking, varied, train_cfg, loop_cfg, inputs.data, metric, out)
    typer.echo(f"autolabel grid: {len(combos)} combinations of {len(inputs.labeled)} human labels and "
               f"{len(inputs.pool)} unlabelled images -> {out}")

    def announce(combo, folder):
        typer.echo(f"[{combo.index}/{len(combos)}] {combo.name} -> {folder}")

    job = GridJob(combos, train_cfg, loop_cfg, inputs, out, metric)
    ranked = run_grid(job, open_cache(cache_dir), tracker=tracker, progress=progress_enabled(), announce=announce)
    if tracker:
        tracker.finish(ranked, metric, out / "grid.csv")
    _table(ranked, metric, [p.name for p in varied])
    print_skips(typer.echo, inputs.labeled.skipped + inputs.pool.skipped)
    typer.echo(f"best: {ranked[0]['combination']}; results: {out / 'grid.csv'}")
    if tracker and tracker.describe():
        typer.echo(tracker.describe())
    return ranked


def _metric(metric: Optional[str], test: Optional[Path], truth: Optional[Path]) -> str:
    metric = metric or ("test_accuracy" if test else "val_macro_f1")
    if metric not in METRICS:
        raise InputError(f"unknown --metric {metric!r}; valid: {', '.join(METRICS)}")
    if metric == "test_accuracy" and not test:
        raise InputError("--metric test_accuracy needs a test split: give --test")
    if metric == "precision" and not truth:
        raise InputError("--metric precision needs the pool's truth: give --truth")
    return metric


def _grid_dir(out: Optional[Path]) -> Path:
    out = out or Path("runs") / time.strftime("grid-%Y%m%d-%H%M%S")
    if (out / "grid.csv").exists():
        raise InputError(f"--out {out} already holds a grid; choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {out} is not writable: {e.strerror or e}") from None
    return out


def _tracker(tracking, varied, train_cfg, loop_cfg, sources, metric, out) -> Optional[GridTracker]:
    """The started grid tracker (its parent run exists), or None with --no-mlflow."""
    if tracking is None:
        return None
    spec = {p.name: ",".join(p.texts) for p in varied}
    # the shared settings only: a grid key's base value is not what any child ran with
    keys = {f"{p.section}.{p.name}" for p in varied}
    shared = {k: v for k, v in flatten({"train": train_cfg.to_dict(), "loop": loop_cfg.to_dict(),
                                        "data": sources}).items() if k not in keys}
    return GridTracker(tracking).start(out.name, spec, shared, metric, out)


def _table(ranked: list[dict], metric: str, keys: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"autolabel grid, ranked by {metric}")
    cols = ["rank", *keys, "test acc", "precision", "val F1", "coverage", "accepted"]  # the rest: grid.csv
    for c in cols:
        table.add_column(c, justify="right")
    for r in ranked:
        table.add_row(str(r["rank"]), *[str(r[k]) for k in keys], _pct(r["test_accuracy"]), _pct(r["precision"]),
                      _pct(r["val_macro_f1"]), _pct(r["coverage"]), str(r["accepted"]))
    Console().print(table)


def _pct(x) -> str:
    return "" if x is None or x != x else f"{x:.1%}"
