"""What every command shares: logging setup, the feature cache location, config helpers, the
tracking choice. (The options several commands take are in autolabel.cli.options.)"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from autolabel.settings import open_cache
from autolabel.tracking_tools import tracking_choice
from embeddings.features import Embedder


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


def open_embedder(model: str, img_size: int | None, cache_dir: Path | None, workers: int | None) -> Embedder:
    """The frozen backbone `index` and `ood` embed with, on the feature cache, with a progress bar."""
    return Embedder(model, img_size=img_size, cache=open_cache(cache_dir), workers=workers,
                    progress=progress_enabled())


def weights_choice(weights: Path | None, pretrained: bool | None) -> str | None:
    """--weights FILE wins; --pretrained downloads from the hub; --no-pretrained is random init."""
    if weights is not None:
        return str(weights)
    if pretrained is None:
        return "auto"
    return "hub" if pretrained else None


def tracking_for(ctx, mlflow: bool | None, uri: str | None, experiment: str | None) -> dict | None:
    """A command's MLflow choice, what it leaves unset taken from the root command's flags."""
    return tracking_choice(mlflow, uri, experiment, ctx.parent.params if ctx.parent else None)


def print_skips(echo, skipped: list[tuple[str, str]]) -> None:
    if skipped:
        echo(f"skipped {len(skipped)} file(s) that could not be used:")
        for path, reason in skipped[:20]:
            echo(f"  {path}: {reason}")
        if len(skipped) > 20:
            echo(f"  ... and {len(skipped) - 20} more (see the log)")
