"""The `autolabel` command line. Thin: parse flags, build a config, call one library function,
print a summary. User mistakes end in a one-line error and exit code 2; tracebacks only with
--debug."""
from __future__ import annotations

import sys

import click
import typer

from autolabel.cli import data as data_cmds
from autolabel.cli import train as train_cmds
from autolabel.cli.common import STATE, setup_logging
from classification.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Semi-supervised pseudo-labelling for image classification.")
app.command("train")(train_cmds.train)
app.command("predict")(train_cmds.predict)
app.add_typer(data_cmds.app, name="data")


@app.callback(invoke_without_command=True)
def root(ctx: typer.Context,
         quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and the final summary."),
         debug: bool = typer.Option(False, "--debug", help="Verbose logs and full tracebacks.")):
    """Semi-supervised pseudo-labelling for image classification."""
    setup_logging(quiet, debug)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


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
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
