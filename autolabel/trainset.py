"""What a trial trains on: the human labels (the user's training split plus the pool images a
person reviewed and gave a class), then the accepted pseudo-labels, seen through strong views and,
with `confidence_weight`, weighted by their calibrated confidence."""
from __future__ import annotations

import numpy as np

from autolabel.state import LoopData, LoopState
from classification.data import ImageSet


def reviewed_rows(state: LoopState) -> np.ndarray:
    """Pool rows a person gave a class (the reviewed guard's `reviewed_label`)."""
    reviewed = state.columns.get("reviewed_label")
    return np.zeros(0, np.int64) if reviewed is None else np.flatnonzero(reviewed >= 0)


def training_set(data: LoopData, state: LoopState, confidence_weight: bool) -> tuple[ImageSet, np.ndarray, np.ndarray]:
    """(images with their labels, which get strong views, each one's loss weight)."""
    human, rows, acc = data.train_human, reviewed_rows(state), state.accepted
    if len(rows):
        reviewed = state.columns["reviewed_label"][rows]
        human = human.concat(data.pool.subset(rows).with_labels(reviewed, data.classes))
    pseudo = data.pool.subset(acc).with_labels(state.labels[acc], data.classes)
    strong = np.r_[np.zeros(len(human), bool), np.ones(len(acc), bool)]
    weight = np.ones(len(strong), np.float32)
    if confidence_weight:
        weight[len(human):] = state.confidence[acc]
    return human.concat(pseudo), strong, weight
