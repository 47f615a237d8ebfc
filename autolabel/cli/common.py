"""What every command shares: logging setup, the feature cache location, config helpers."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from autolabel.settings import default_cache_dir, open_cache  # noqa: F401  (the commands' cache)


STATE = {"quiet": False, "debug": False}


def setup_logging(quiet: bool, debug: bool) -> None:
    STATE.update(quiet=quiet, debug=debug)
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("PIL", "matplotlib", "urllib3", "alembic", "mlflow", "timm", "onnxscript"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # mlflow installs its own handler and level when it is first imported (lazily, later)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if debug else "WARNING")


def progress_enabled() -> bool:
    return not STATE["quiet"]


def weights_choice(weights: Path | None, pretrained: bool | None) -> str | None:
    """--weights FILE wins; --pretrained downloads from the hub; --no-pretrained is random init."""
    if weights is not None:
        return str(weights)
    if pretrained is None:
        return "auto"
    return "hub" if pretrained else None


def print_skips(echo, skipped: list[tuple[str, str]]) -> None:
    if skipped:
        echo(f"skipped {len(skipped)} file(s) that could not be used:")
        for path, reason in skipped[:20]:
            echo(f"  {path}: {reason}")
        if len(skipped) > 20:
            echo(f"  ... and {len(skipped) - 20} more (see the log)")
