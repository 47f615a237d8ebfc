"""The options several commands take, defined once so they read and default the same everywhere.
Command modules import these (and autolabel.cli.common), never each other."""
from __future__ import annotations

import typer
from typer.models import OptionInfo

from classification.config import DEFAULT_MODEL
from classification.errors import InputError

# where images come from and where features are cached
DATA_CLEAN = typer.Option(..., "--data-clean", help="Labelled images: a folder per class or a path,label CSV.")
CACHE_DIR = typer.Option(None, "--cache-dir", help="Feature cache folder (default: ~/.cache/autolabel).")
WORKERS = typer.Option(None, "--workers", help="Decoding workers (default: cores - 1).")
IMG_SIZE = typer.Option(None, "--img-size", help="Input size (default: the model's).")

# the classifier that `train` and `lr-find` build
MODEL = typer.Option(DEFAULT_MODEL, "--model", help="Any timm model name.")
WEIGHTS = typer.Option(None, "--weights", help="Backbone state-dict file.")
PRETRAINED = typer.Option(None, "--pretrained/--no-pretrained",
                          help="Download timm hub weights / start from random weights.")
HEAD = typer.Option("linear", "--head", help="linear | mlp.")
LOSS = typer.Option("ce", "--loss", help="ce | bce | focal.")
SEED = typer.Option(0, "--seed", help="Random seed.")

# the backbone that `index` and `ood` embed with
BACKBONE = typer.Option(DEFAULT_MODEL, "--model", help="timm backbone for the embeddings.")
THREADS = typer.Option(0, "--threads", help="FAISS threads (default: all cores).")

# MLflow for the commands besides the loop; what they leave unset comes from the root command's
TRACKING_URI = typer.Option(None, "--tracking-uri", help="MLflow server or store.")
EXPERIMENT = typer.Option(None, "--experiment", help="MLflow experiment (default: autolabel).")


def mlflow_switch(what: str) -> OptionInfo:
    """--mlflow/--no-mlflow, unset (None) unless given: the root command's choice then holds."""
    return typer.Option(None, "--mlflow/--no-mlflow", help=f"{what} (default: on).")


def int_list(text: str, flag: str) -> list[int]:
    """"1,3,5" -> [1, 3, 5] (empty items ignored); anything else is the user's to fix."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{flag} must be comma-separated integers, got {text!r}") from None
