"""What a guard's `fit` gets: the run's images and the settings it may need to embed them."""
from __future__ import annotations

from dataclasses import dataclass

from autolabel.state import LoopData
from classification.cache import FeatureCache
from classification.config import TrainConfig


@dataclass(frozen=True)
class GuardContext:
    data: LoopData          # human labels and the pool
    train: TrainConfig      # the backbone (model, weights, size, runtime) to embed images with
    cache: FeatureCache     # the run's feature cache (the loop's features are already there)
    progress: bool = False  # show progress bars
