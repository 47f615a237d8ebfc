"""The loop's settings, and reading a YAML config with `train:` and `loop:` sections."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from autolabel.policies import POLICIES
from classification.config import TrainConfig, check_field_types, read_config_sections
from classification.errors import InputError

CALIBRATIONS = ("cv", "none")


@dataclass(frozen=True)
class LoopConfig:
    n_trials: int = 10              # trial budget; 0 = supervised only
    threshold: float | None = None  # tau, a confidence bar; its meaning per policy is in policies.py
                                    # (None: 0.8 for fixed and flexmatch, no floor for growth)
    target_precision: float | None = None  # accept, per class, the largest set whose estimated
                                    # precision is >= this, within what the policy allows (exclusive
                                    # with threshold: one bar is asked for, a confidence or a precision)
    policy: str = "growth"          # growth (class-balanced curriculum) | flexmatch | fixed
    growth_start: float = 0.1       # growth: share of the pool accepted at trial 1 (all at the last)
    calibration: str = "cv"         # cv: temperature fitted each trial on cross-validated human labels
                                    # | none: the head's raw probabilities (not an honest estimate)
    calibration_folds: int = 4      # cv: folds over the human labels (fewer when a class has fewer)
    flex_floor: float = 0.5         # flexmatch: tau_c >= flex_floor * tau (see policies.py)
    flex_warmup: bool = True        # flexmatch: count never-confident images in beta's denominator
    balance: float = 1.5            # cap per class: this multiple of its human-label share of the pool; 0 = off
    sticky: bool = False            # keep accepted labels forever (seed 001) instead of re-deciding each trial
    weak_views: int = 1             # predict the pool with the mean of this many weak views (1: eval view)
    confidence_weight: bool = True   # weight each pseudo-labelled image's loss by its calibrated confidence
    ood_guard: bool = True          # refuse pool images far from every human label (embeddings/ood.py)
    ood_k: int = 5                  # the guard's score: distance to the k-th nearest human label
    ood_tpr: float = 0.95           # the guard's threshold keeps this share of human labels (leave-one-out)

    def __post_init__(self):
        check_field_types(self)
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise InputError(f"--threshold must be in (0, 1], got {self.threshold}")
        if self.target_precision is not None and not 0 < self.target_precision <= 1:
            raise InputError(f"--target-precision must be in (0, 1], got {self.target_precision}")
        if self.threshold is not None and self.target_precision is not None:
            raise InputError("--threshold and --target-precision are exclusive: give a confidence bar "
                             "or a precision target, not both")
        if self.calibration not in CALIBRATIONS:
            raise InputError(f"unknown calibration {self.calibration!r}; valid: {', '.join(CALIBRATIONS)}")
        if self.calibration_folds < 2 or not 0 < self.growth_start <= 1:
            raise InputError(f"calibration_folds must be >= 2 and growth_start in (0, 1]; got "
                             f"{self.calibration_folds}, {self.growth_start}")
        if self.n_trials < 0:
            raise InputError(f"--n-trials must be >= 0, got {self.n_trials}")
        if self.policy not in POLICIES:
            raise InputError(f"unknown policy {self.policy!r}; valid: {', '.join(POLICIES)}")
        if self.weak_views < 1:
            raise InputError(f"weak_views must be >= 1, got {self.weak_views}")
        if self.ood_k < 1 or not 0 < self.ood_tpr <= 1:
            raise InputError(f"ood_k must be >= 1 and ood_tpr in (0, 1]; got {self.ood_k}, {self.ood_tpr}")
        if not 0 <= self.flex_floor <= 1:
            raise InputError(f"flex_floor must be in [0, 1], got {self.flex_floor}")

    def to_dict(self) -> dict:
        return asdict(self)


def load_config(path: str | Path | None) -> tuple[dict, dict]:
    """Read `path` (YAML, safe loader) into raw `train` and `loop` dicts; unknown keys are errors."""
    if path is None:
        return {}, {}
    sections = read_config_sections(path, {"train": TrainConfig, "loop": LoopConfig})
    return sections["train"], sections["loop"]
