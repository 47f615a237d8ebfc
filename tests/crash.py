"""The crash-safety tests' fault injection: with AUTOLABEL_CRASH_AT=<point>:<trial> set, a process
that calls `install()` SIGKILLs itself when the run reaches that point (see autolabel.hooks),
as a power cut or the OOM killer would."""
from __future__ import annotations

import os
import signal

from autolabel import hooks

CRASH_ENV = "AUTOLABEL_CRASH_AT"


def install() -> None:
    target = os.environ.get(CRASH_ENV)
    if target:
        hooks.listen(lambda point, trial: os.kill(os.getpid(), signal.SIGKILL)
                     if f"{point}:{trial}" == target else None)
