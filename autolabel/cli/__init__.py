"""The `autolabel` command line. Thin: parse flags, build a config, call one library function,
print a summary. User mistakes (and a full disk) end in a one-line error and exit code 2;
tracebacks only with --debug."""
from __future__ import annotations

import contextlib
import errno
import importlib
import sys
from pathlib import Path
from typing import Optional

import typer

from autolabel.cli import data as data_cmds
from autolabel.cli import grid as grid_cmds
from autolabel.cli import index as index_cmds
from autolabel.cli import localize as localize_cmds
from autolabel.cli import ood as ood_cmds
from autolabel.cli import review as review_cmds
from autolabel.cli import segment as segment_cmds
from autolabel.cli import tools as tools_cmds
from autolabel.cli import train as train_cmds
from autolabel.cli import ui as ui_cmds
from autolabel.cli.common import STATE, progress_enabled, setup_logging
from autolabel.cli.run import run_loop
from autolabel.settings import NothingToLabel, RunRequest, disk_full_message
from classification.config import DEFAULT_MODEL
from classification.distributed import init_from_env, is_main
from classification.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Semi-supervised pseudo-labelling for image classification.")
app.command("train")(train_cmds.train)
app.command("predict")(train_cmds.predict)
app.command("ui")(ui_cmds.ui)
app.command("lr-find")(tools_cmds.lr_find)
app.command("grid")(grid_cmds.grid)
app.add_typer(data_cmds.app, name="data")
app.add_typer(index_cmds.app, name="index")
app.add_typer(ood_cmds.app, name="ood")
review_cmds.register(app)
app.add_typer(segment_cmds.app, name="segment")
app.add_typer(localize_cmds.app, name="localize")


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    data_clean: Optional[Path] = typer.Option(None, "--data-clean", help="Human labels: a folder per class or a path,label CSV (default: the bundled sample)."),
    data_raw: Optional[Path] = typer.Option(None, "--data-raw", help="Unlabelled images: any folder tree or a CSV with a path column."),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", help="Trial budget (default: 10)."),
    threshold: Optional[float] = typer.Option(None, help="Confidence bar: fixed: every class's (default 0.8); flexmatch: the top of the class-wise bars, never below flex_floor x it (default 0.8); growth: a floor under its rank bars (default none)."),
    target_precision: Optional[float] = typer.Option(None, "--target-precision", help="Accept, per class, the largest set whose estimated precision is at least this (within the policy's choice); exclusive with --threshold."),
    policy: Optional[str] = typer.Option(None, help="growth (class-balanced curriculum) | flexmatch | fixed (default: growth)."),
    mode: Optional[str] = typer.Option(None, help="head | finetune (default: head on CPU, finetune on CUDA)."),
    out: Optional[Path] = typer.Option(None, "--out", "--baselogdir", help="Output folder (default: runs/<timestamp>)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder after its last completed trial; its saved settings are used, and other settings given must match them."),
    config: Optional[Path] = typer.Option(None, help="YAML with train: and loop: sections; flags override it."),
    truth: Optional[Path] = typer.Option(None, help="file,label CSV for the pool: only scores the pseudo-labels."),
    test: Optional[Path] = typer.Option(None, help="Labelled test images: only scored."),
    data_other: Optional[Path] = typer.Option(None, "--data-other", help="Images that belong to none of the classes (a folder or a CSV with a path column): they sharpen the out-of-class guard and are never labelled."),
    reviewed: Optional[Path] = typer.Option(None, "--reviewed", help="A review.csv (autolabel review): approved and corrected images become human labels from the next trial on, rejected ones are never labelled."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default: 0)."),
    sticky: Optional[bool] = typer.Option(None, "--sticky/--no-sticky", help="Keep accepted labels forever."),
    balance: Optional[float] = typer.Option(None, help="Class-balance cap, a multiple of each class's share (default: 1.5; 0 = off)."),
    views: Optional[int] = typer.Option(None, "--views", help="Average this many weak views to predict the pool (default: 1)."),
    ood_guard: Optional[bool] = typer.Option(None, "--ood-guard/--no-ood-guard", help="Refuse images of no labelled class: far from every human label or unlike every labelled class (default: on)."),
    model: Optional[str] = typer.Option(None, help=f"timm model (default: {DEFAULT_MODEL})."),
    img_size: Optional[int] = typer.Option(None, help="Input size (default: the model's)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache folder (default: ~/.cache/autolabel)."),
    mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Track the run in MLflow (default: on)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow server or store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)."),
    experiment: str = typer.Option("autolabel", "--experiment", help="MLflow experiment name."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and the final summary."),
    debug: bool = typer.Option(False, "--debug", help="Verbose logs and full tracebacks."),
):
    """Run the pseudo-labelling loop (with no command), or one of the commands below."""
    distributed = init_from_env()  # under torchrun: join the process group (see docs/scaling.md)
    setup_logging(quiet or not is_main(), debug)
    if ctx.invoked_subcommand is not None:
        if distributed:
            raise InputError(f"`autolabel {ctx.invoked_subcommand}` runs in one process; under torchrun "
                             "only the loop (autolabel with no command) is distributed")
        return
    req = RunRequest(
        data={"data_clean": data_clean, "data_raw": data_raw, "truth": truth, "test": test, "reviewed": reviewed,
              "data_other": data_other},
        train={"mode": mode, "seed": seed, "model": model, "img_size": img_size},
        loop={"n_trials": n_trials, "threshold": threshold, "target_precision": target_precision,
              "policy": policy, "sticky": sticky,
              "balance": balance, "weak_views": views, "ood_guard": ood_guard},
        config=config, out=out, cache_dir=cache_dir, progress=progress_enabled(),
        tracking={"uri": tracking_uri, "experiment": experiment} if mlflow else None)
    run_loop(req, resume)


def _usage_errors() -> tuple[type[Exception], ...]:
    """The ClickException class of the click typer parses with: typer 0.29 carries its own copy
    (typer._click), whose errors do not derive from the click package's; older typer used the
    click package itself."""
    for module in ("typer._click.exceptions", "click.exceptions"):
        with contextlib.suppress(ImportError):
            return (importlib.import_module(module).ClickException,)
    return ()


USAGE_ERRORS = _usage_errors()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app and turns user errors into one line and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="autolabel", standalone_mode=False)
    except USAGE_ERRORS as e:  # a typo in a flag or command: the usage, the error, a suggestion
        e.show()
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except NothingToLabel as e:  # an empty pool: said, and nothing written
        typer.echo(f"autolabel: {e}")
        return 0
    except InputError as e:
        if STATE["debug"] or "--debug" in args:
            raise
        typer.echo(f"autolabel: error: {e}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except OSError as e:  # a full disk is the user's to fix, not a bug: one line too
        if e.errno != errno.ENOSPC or STATE["debug"] or "--debug" in args:
            raise
        typer.echo(f"autolabel: error: {disk_full_message(e)}", err=True)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
