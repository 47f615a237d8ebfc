"""What a run is asked to do, resolved: the request as the command line gave it, the configs
(YAML under flags), the data sources (the bundled sample by default) and the output folder."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from autolabel.config import LoopConfig, load_config
from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.errors import InputError

BUNDLED = Path(__file__).resolve().parents[1] / "data"


@dataclass(frozen=True)
class RunRequest:
    """A run as asked for; None anywhere means "not given" (the saved run's or the default)."""
    data: dict = field(default_factory=dict)   # data_clean, data_raw, truth, test, reviewed: paths
    train: dict = field(default_factory=dict)  # TrainConfig fields given as flags
    loop: dict = field(default_factory=dict)   # LoopConfig fields given as flags
    config: Path | None = None                 # YAML with train: and loop: sections, under the flags
    out: Path | None = None                    # output folder (default: runs/<timestamp>)
    cache_dir: Path | None = None              # feature cache (default: ~/.cache/autolabel)
    tracking: dict | None = None               # None = no MLflow, else {"uri": ..., "experiment": ...}
    progress: bool = False                     # progress bars
    echo: Callable[[str], None] = lambda line: None  # where the run's few messages for the user go


def default_cache_dir() -> Path:
    return Path(os.environ.get("AUTOLABEL_CACHE", Path.home() / ".cache" / "autolabel"))


def open_cache(cache_dir: Path | None) -> FeatureCache:
    """The feature cache in `cache_dir`, else $AUTOLABEL_CACHE, else ~/.cache/autolabel."""
    return FeatureCache(cache_dir if cache_dir is not None else default_cache_dir())


def resolve_configs(config: Path | None, train_flags: dict, loop_flags: dict) -> tuple[TrainConfig, LoopConfig]:
    train_yaml, loop_yaml = load_config(config)
    train = {**train_yaml, **given(train_flags)}
    loop = {**loop_yaml, **given(loop_flags)}
    return TrainConfig.from_dict(train), LoopConfig(**loop)


def requested(saved: dict, req: RunRequest) -> dict:
    """A saved run's settings with the request's --config and flags on top, resolved like a new run's."""
    train_yaml, loop_yaml = load_config(req.config)
    train = TrainConfig.from_dict({**saved["train"], **train_yaml, **given(req.train)})
    loop = LoopConfig(**{**saved["loop"], **loop_yaml, **given(req.loop)})
    data = {**saved["data"], **{k: str(Path(v).resolve()) for k, v in given(req.data).items()}}
    return {"train": train.to_dict(), "loop": loop.to_dict(), "data": data}


def resolve_sources(data_clean, data_raw, truth, test):
    """(labelled, pool, truth, test): the bundled sample (with its truth and test split) when
    neither --data-clean nor --data-raw is given."""
    if data_clean is None and data_raw is None:
        if not (BUNDLED / "labeled").is_dir():
            raise InputError("no --data-clean/--data-raw given and the bundled sample data/ is not there")
        truth = truth or BUNDLED / "unlabeled_truth.csv"
        test = test or BUNDLED / "test"
        return BUNDLED / "labeled", BUNDLED / "unlabeled", truth, test
    if data_clean is None or data_raw is None:
        raise InputError("give both --data-clean (labelled) and --data-raw (unlabelled)")
    if Path(data_clean).is_dir() and _within(data_raw, data_clean):
        raise InputError(f"--data-raw {data_raw} is inside --data-clean {data_clean}, whose subfolders are its "
                         "classes: its images would be read as labelled; keep the unlabelled images elsewhere")
    return data_clean, data_raw, truth, test


def refuse_out_inside(out: Path | None, sources: tuple) -> None:
    """A run folder inside an image folder would have its own pictures read as images next time."""
    for flag, folder in zip(("--data-clean", "--data-raw"), sources[:2]):
        if out is not None and Path(folder).is_dir() and _within(out, folder):
            raise InputError(f"--out {out} is inside {flag} {folder}: the run's pictures would be read as "
                             "images by the next run; choose a folder outside it")


def _within(path, folder) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def data_section(data_clean, data_raw, truth, test) -> dict:
    """Absolute paths, so `--resume` finds the same images from any working folder."""
    def absolute(p):
        return str(Path(p).resolve()) if p else None

    return {"data_clean": absolute(data_clean), "data_raw": absolute(data_raw),
            "test": absolute(test), "truth": absolute(truth)}


def given(flags: dict) -> dict:
    return {k: v for k, v in flags.items() if v is not None}


def new_out_dir(out: Path | None) -> Path:
    """The run's folder, created and checked writable; an existing run there is refused."""
    out = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    refuse_existing_run(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"--out {out} is not writable: {e.strerror or e}") from None
    return out


class NothingToLabel(InputError):
    """The pool holds no image that is not already labelled: an honest stop (exit 0), not an error."""


def refuse_existing_run(out: Path) -> None:
    if any((out / name).exists() for name in ("config.yaml", "state.json", "metrics.json")):
        raise InputError(f"--out {out} already holds a run; continue it with `autolabel --resume {out}`, "
                         "or choose another folder")


def disk_full_message(e: OSError, out: Path | None = None) -> str:
    """One line for ENOSPC: which folder, and (for a run) how to continue once space is freed."""
    folder = Path(e.filename).parent if e.filename else out
    hint = f", then continue with `autolabel --resume {out}`" if out else ""
    return f"disk full (no space left on device) while writing to {folder}; free some space{hint}"
