"""`FitContext`: what the parts of a fit, and the feature passes they make, share.

`engine.fit()` builds one per fit; head and finetune mode, the view extraction and
`features.extract_features` take it plus what is their own (the images, a transform kind), instead
of a dozen loose arguments. `predict()` builds one for inference (no epochs, no callback).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from torch import nn

    from classification.cache import FeatureCache
    from classification.config import TrainConfig
    from classification.transforms import DataConfig

EpochCallback = Callable[[dict], None]


@dataclass(frozen=True)
class FitContext:
    model: nn.Module                          # the classifier; its backbone makes the features
    cfg: TrainConfig                          # settings (runtime, batch_size, workers, n_ops, tail_blocks, ...)
    data_cfg: DataConfig                      # the model's input size, mean / std and interpolation
    cache: FeatureCache                       # backbone features by (image content, backbone, transform, view)
    device: str = "cpu"                       # resolved: cpu | cuda[:i]
    progress: bool = False                    # progress bars (one line per stage when stderr is not a terminal)
    on_epoch: EpochCallback | None = None     # gets every training epoch's record
