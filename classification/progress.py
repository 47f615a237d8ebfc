"""Progress for long loops, decided here for every bar of the library.

On a terminal: a tqdm bar that redraws itself in place. Anywhere else (a log file, CI, `nohup`, a
job scheduler) a redrawn bar is thousands of carriage-return updates in the log, so instead each
stage logs one short line when it ends, plus 25 / 50 / 75 % lines while it is past `LONG_S`.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

_logger = logging.getLogger(__name__)

T = TypeVar("T")
LONG_S = 10.0  # a stage running longer than this also logs how far it is
MARKS = (0.25, 0.5, 0.75)
PLURALS = {"batch": "batches"}


def track(items: Iterable[T], enabled: bool, desc: str, unit: str) -> Iterable[T]:
    """`items`, with progress shown when `enabled`: a bar on a terminal, else a few log lines."""
    if not enabled:
        return items
    if _on_terminal():
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, unit=unit, leave=False)
    return _logged(items, desc, unit)


def _on_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _logged(items: Iterable[T], desc: str, unit: str) -> Iterator[T]:
    total = len(items) if hasattr(items, "__len__") else None
    units = PLURALS.get(unit, unit + "s")
    marks, done, start = list(MARKS), 0, time.monotonic()
    try:
        for item in items:
            done += 1  # counted when handed out: a loop that breaks has still run this one
            yield item
            while total and marks and done >= marks[0] * total:
                marks.pop(0)
                if time.monotonic() - start >= LONG_S:
                    _logger.info("%s: %d%% (%d of %d %s)", desc, round(100 * done / total), done, total, units)
    finally:  # also when the loop stops early (early stopping) or fails
        of = f" of {total}" if total is not None and done != total else ""
        _logger.info("%s: %d%s %s in %.1f s", desc, done, of, units, time.monotonic() - start)
