"""What the root command prints when a run ends: the trial table (readable at 80 columns, in a
terminal or a log file), why the loop stopped, the skipped files and where the dataset is."""
from __future__ import annotations

from typing import Callable

from autolabel.cli.common import print_skips
from autolabel.loop import NOTHING_MORE

# "est. prec.": the estimated precision of the accepted labels (mean calibrated confidence);
# "true prec.": the audited one (with --truth)
COLUMNS = ["trial", "accepted", "new", "dropped", "OOD refused", "coverage", "val acc", "test acc",
           "est. prec.", "true prec."]


def report(outcome, echo: Callable[[str], None], width: int | None = None) -> None:
    """Print a finished run's summary (`outcome`: autolabel.run.RunOutcome)."""
    state = outcome.state
    print_table(outcome.metrics, width)
    if state.termination_reason in ("nothing_new", "no_change"):
        echo(NOTHING_MORE)
    print_skips(echo, outcome.skipped)
    echo(f"stopped: {state.termination_reason}; dataset: {outcome.out / 'dataset.csv'}")
    if outcome.tracker and outcome.tracker.describe():
        echo(outcome.tracker.describe())


def trial_table(metrics: dict):
    """The trials (and the final state) of metrics.json as a rich Table whose headers fit 80
    columns without being cut: no vertical rules, headers wrap at their spaces."""
    from rich import box
    from rich.table import Table

    table = Table(title="autolabel trials", box=box.SIMPLE_HEAD, pad_edge=False, padding=0)
    for c in COLUMNS:
        word = max(map(len, c.split()))
        # a header of several words wraps to its longest word (or a value's "100.0%")
        table.add_column(c, justify="right", min_width=word, max_width=max(word, 6) if " " in c else None)
    for r in metrics["trials"]:
        table.add_row(str(r["trial"]), str(r["accepted"]), str(r["newly_accepted"]), str(r["dropped"]),
                      str(r.get("refused_ood", "")), pct(r["coverage"]), pct(r.get("val_accuracy")),
                      pct(r.get("test_accuracy")), pct(r.get("estimated_precision")),
                      pct(r.get("audit", {}).get("precision")))
    final = metrics["final"]
    table.add_row("final", str(final["pseudo_labels"]), "", "", str(final.get("refused_ood", "")),
                  pct(final["pseudo_labels"] / max(final["pool"], 1)), "", pct(final.get("test_accuracy")),
                  pct(final.get("estimated_precision")), pct(final.get("audit", {}).get("precision")))
    return table


def print_table(metrics: dict, width: int | None = None) -> None:
    from rich.console import Console

    Console(width=width).print(trial_table(metrics))


def pct(x) -> str:
    return "" if x is None or x != x else f"{x:.1%}"
