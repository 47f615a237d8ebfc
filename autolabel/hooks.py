"""Named points a run passes (`reached(point, trial)`), for whoever wants to watch them: the
crash-safety tests install a listener that kills the process at one of them, as a power cut or
the OOM killer would. Production code only announces the points; nothing listens by default.

    extract:0    the human labels' features are cached, the pool's not yet
    train:<i>    after the first epoch of trial i's training (None: the final fit)
    commit:<i>   trial i's CSV, dataset.csv and metrics.json written, its state.json not
    final:<n>    every trial committed, the final fit not done
"""
from __future__ import annotations

from typing import Callable

Listener = Callable[[str, "int | None"], None]
_LISTENERS: list[Listener] = []


def reached(point: str, trial: int | None) -> None:
    for listener in list(_LISTENERS):
        listener(point, trial)


def listen(listener: Listener) -> Callable[[], None]:
    """Call `listener(point, trial)` at every point; returns a function that stops it."""
    _LISTENERS.append(listener)
    return lambda: _LISTENERS.remove(listener) if listener in _LISTENERS else None
