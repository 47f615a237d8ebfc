"""The root command: `autolabel [--data-clean ...] [--n-trials 10] [--threshold 0.8] ...` runs the
loop; `autolabel --resume DIR` continues a run that was killed, after its last completed trial.
The work is autolabel.run's; this module only prints."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from autolabel import run as driver
from autolabel.cli.report import report
from autolabel.settings import RunRequest


def run_loop(req: RunRequest, resume: Optional[Path] = None) -> None:
    """Start the run `req` asks for, or continue the one in `resume`; print its summary."""
    req = replace(req, echo=typer.echo)
    outcome = driver.resume(resume, req) if resume is not None else driver.start(req)
    if isinstance(outcome, dict):  # the run had already finished: nothing to redo, say so and succeed
        typer.echo(f"autolabel: {resume} already finished ({outcome['trial']} trials, stopped: "
                   f"{outcome['termination_reason']}); nothing to resume. dataset: {resume / 'dataset.csv'}")
    elif outcome is not None:  # None: a torchrun rank other than 0, which prints nothing
        report(outcome, typer.echo)
