"""What a run is asked to do, as the root command and `grid` both resolve it: the configs (YAML,
then the flags given on top) and the data sources (the bundled sample when none are given); and
the one-line message for a disk that fills up under a run."""
from __future__ import annotations

from pathlib import Path

from autolabel.config import LoopConfig, load_config
from classification.config import TrainConfig
from classification.errors import InputError

BUNDLED = Path(__file__).resolve().parents[1] / "data"  # the sample the default command runs on


def given(flags: dict) -> dict:
    """The flags the user gave (typer leaves the others None)."""
    return {k: v for k, v in flags.items() if v is not None}


def resolve_configs(config: Path | None, train_flags: dict, loop_flags: dict) -> tuple[TrainConfig, LoopConfig]:
    """--config's train: and loop: sections with the flags given on top, validated."""
    train_yaml, loop_yaml = load_config(config)
    train = {**train_yaml, **given(train_flags)}
    loop = {**loop_yaml, **given(loop_flags)}
    return TrainConfig.from_dict(train), LoopConfig(**loop)


def resolve_sources(data_clean, data_raw, truth, test):
    """(data_clean, data_raw, truth, test): as given, or the bundled sample with its truth and
    test split when neither --data-clean nor --data-raw is."""
    if data_clean is None and data_raw is None:
        if not (BUNDLED / "labeled").is_dir():
            raise InputError("no --data-clean/--data-raw given and the bundled sample data/ is not there")
        truth = truth or BUNDLED / "unlabeled_truth.csv"
        test = test or BUNDLED / "test"
        return BUNDLED / "labeled", BUNDLED / "unlabeled", truth, test
    if data_clean is None or data_raw is None:
        raise InputError("give both --data-clean (labelled) and --data-raw (unlabelled)")
    return data_clean, data_raw, truth, test


def disk_full_message(e: OSError, out: Path | None = None) -> str:
    """One line for ENOSPC: which folder, and (for a run) how to continue once space is freed."""
    folder = Path(e.filename).parent if e.filename else out
    hint = f", then continue with `autolabel --resume {out}`" if out else ""
    return f"disk full (no space left on device) while writing to {folder}; free some space{hint}"
