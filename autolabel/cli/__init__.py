"""The `autolabel` command line. Thin: parse flags, build a config, call one library function,
print a summary. User mistakes (and a full disk) end in a one-line error and exit code 2;
tracebacks only with --debug."""
from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Optional

import click
import typer

from autolabel.cli import data as data_cmds
from autolabel.cli import grid as grid_cmds
from autolabel.cli import index as index_cmds
from autolabel.cli import localize as localize_cmds
from autolabel.cli import ood as ood_cmds
from autolabel.cli import tools as tools_cmds
from autolabel.cli import train as train_cmds
from autolabel.cli import ui as ui_cmds
from autolabel.cli.common import STATE, setup_logging
from autolabel.cli.run import disk_full_message, run_loop
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
app.add_typer(localize_cmds.app, name="localize")


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    data_clean: Optional[Path] = typer.Option(None, "--data-clean", help="Human labels: a folder per class or a path,label CSV (default: the bundled sample)."),
    data_raw: Optional[Path] = typer.Option(None, "--data-raw", help="Unlabelled images: any folder tree or a CSV with a path column."),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", help="Trial budget (default: 10)."),
    threshold: Optional[float] = typer.Option(None, help="Confidence needed to accept a pseudo-label (default: 0.8)."),
    policy: Optional[str] = typer.Option(None, help="flexmatch | fixed (default: flexmatch)."),
    mode: Optional[str] = typer.Option(None, help="head | finetune (default: head on CPU, finetune on CUDA)."),
    out: Optional[Path] = typer.Option(None, "--out", "--baselogdir", help="Output folder (default: runs/<timestamp>)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder after its last completed trial; its saved settings are used, and other settings given must match them."),
    config: Optional[Path] = typer.Option(None, help="YAML with train: and loop: sections; flags override it."),
    truth: Optional[Path] = typer.Option(None, help="file,label CSV for the pool: only scores the pseudo-labels."),
    test: Optional[Path] = typer.Option(None, help="Labelled test images: only scored."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default: 0)."),
    sticky: Optional[bool] = typer.Option(None, "--sticky/--no-sticky", help="Keep accepted labels forever."),
    balance: Optional[float] = typer.Option(None, help="Class-balance cap, a multiple of each class's share (default: 1.5; 0 = off)."),
    views: Optional[int] = typer.Option(None, "--views", help="Average this many weak views to predict the pool (default: 1)."),
    ood_guard: Optional[bool] = typer.Option(None, "--ood-guard/--no-ood-guard", help="Refuse images far from every human label (default: on)."),
    model: Optional[str] = typer.Option(None, help="timm model (default: efficientnet_lite0)."),
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
    run_loop(data_clean, data_raw, out, config, truth, test, cache_dir,
             train_flags={"mode": mode, "seed": seed, "model": model, "img_size": img_size},
             loop_flags={"n_trials": n_trials, "threshold": threshold, "policy": policy,
                         "sticky": sticky, "balance": balance, "weak_views": views,
                         "ood_guard": ood_guard},
             tracking={"uri": tracking_uri, "experiment": experiment} if mlflow else None, resume=resume)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app and turns user errors into one line and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="autolabel", standalone_mode=False)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        return 130
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
