"""The loop's state as one object: what a run works on (`LoopData`) and what its trials have
produced so far (`LoopState`). Writers, pictures and trackers read these two and nothing else;
`state.json` is `LoopState.to_json()`, and `--resume` rebuilds a `LoopState` from it.

No random-number state is saved because none carries over between trials: every fit reseeds from
`train.seed` (the split, the head's generators and the DataLoader seeds derive from it;
augmentation seeds from image content and view), and feature extraction gives the same values
whatever the batch. So trial i + 1 depends only on the accepted labels, their confidences, the
policy's and the guards' state after trial i; the seed is stored for the record.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from autolabel.calibration import estimated_precision, label_scores
from classification.data import UNLABELED, ImageSet
from classification.errors import InputError

FORMAT = 4  # state.json layout; 4 added the reviewed guard and took the trial budget out of the
            # fingerprint, 3 added the calibration and the reference probabilities,
            # 1 kept the out-of-class guard's arrays under their own keys. The digests RunWriter
            # adds ("outputs", "digest") are optional within format 4: without them, not checked


@dataclass(frozen=True)
class LoopData:
    """The images one run labels, as the loop sees them after de-duplication."""
    labeled: ImageSet        # human labels (an image both labelled and in the pool counts as labelled)
    pool: ImageSet           # the unlabelled images, de-duplicated against `labeled`
    train_human: ImageSet    # the human labels every fit trains on
    val: ImageSet            # the human labels held out for validation (never pseudo-labels)
    test: ImageSet | None    # scored only, never used to decide anything

    @property
    def classes(self) -> list[str]:
        return self.labeled.classes

    @property
    def human_counts(self) -> np.ndarray:
        return np.bincount(self.labeled.labels, minlength=len(self.classes))


@dataclass
class LoopState:
    """Everything a trial produces or the next one needs, over the pool of `data`.

    Arrays are (N,) over `data.pool`. `columns` are the guards' per-image outputs (for example
    `ood_score`, `ood_refused`), written beside the labels; they are part of the guards' saved
    state and come back with it. `prediction` is the last trial's per-image decision (see
    `autolabel.decision.Decision`), for that trial's CSV only; the final fit's outcome (`model`,
    `test_pred`, `test_accuracy`) is set once the loop ends. Neither is saved: the next trial or
    the final fit rebuilds them.
    """
    data: LoopData                          # the images (not saved: --resume loads and fingerprints them)
    labels: np.ndarray                      # accepted class per pool image, -1 = none
    confidence: np.ndarray                  # confidence of the latest prediction
    accepted_trial: np.ndarray              # trial that accepted the current label, -1 = none
    policy: dict                            # the threshold policy's state_dict()
    guards: dict[str, dict]                 # each guard's state_dict(), by registry name
    columns: dict[str, np.ndarray]          # the guards' per-image outputs (in their state too)
    seed: int
    fingerprint: str                        # digest of the settings and images (autolabel.resume)
    calibration: dict = field(default_factory=dict)  # {"temperature", "cv_accuracy"}, fitted in trial 1
    reference: np.ndarray | None = None     # (N, C) trial 1's calibrated probabilities (human labels
                                            # only): what estimated precision is measured with
    history: list[dict] = field(default_factory=list)  # one record per trial
    n_trials: int = 0
    termination_reason: str = "max_trials"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # files that failed to decode
    prediction: object | None = None
    model: object | None = None             # the final FitResult
    test_pred: np.ndarray | None = None     # the final model on the test split, -1 = undecodable
    test_accuracy: float | None = None

    @classmethod
    def empty(cls, data: LoopData, seed: int, fingerprint: str) -> "LoopState":
        n = len(data.pool)
        return cls(data=data, labels=np.full(n, UNLABELED, np.int64), confidence=np.zeros(n, np.float32),
                   accepted_trial=np.full(n, -1, np.int64), policy={}, guards={}, columns={},
                   seed=seed, fingerprint=fingerprint)

    @property
    def accepted(self) -> np.ndarray:
        """Pool indices with an accepted pseudo-label."""
        return np.flatnonzero(self.labels >= 0)

    def label_scores(self) -> np.ndarray:
        """(N,) each current label's estimated chance of being right (0 where none; all 0 before
        trial 1 has fitted the reference)."""
        if self.reference is None:
            return np.zeros(len(self.labels), np.float32)
        return label_scores(self.reference, self.labels)

    def estimated_precision(self) -> tuple[float | None, dict]:
        """The accepted labels' estimated precision, overall and per class name."""
        overall, per = estimated_precision(self.label_scores(), self.labels, len(self.data.classes))
        return overall, dict(zip(self.data.classes, per))

    def apply(self, trial: int, accept: np.ndarray, guess: np.ndarray, conf: np.ndarray, sticky: bool) -> None:
        """The trial's accepted predictions become the labels (or, `sticky`, add to them)."""
        if sticky:
            new = accept & (self.labels < 0)
            self.labels[new] = guess[new]
        else:
            self.labels = np.where(accept, guess, UNLABELED)
        changed = (self.labels >= 0) & (self.accepted_trial < 0)
        self.accepted_trial[changed] = trial
        self.accepted_trial[self.labels < 0] = -1
        self.confidence = conf.astype(np.float32)

    def to_json(self, finished: bool = False, **extra) -> dict:
        """state.json: the state after the last completed trial; `extra` (the MLflow run id, the
        cache folder) rides along."""
        return {"format": FORMAT, "trial": self.n_trials, "finished": finished,
                "fingerprint": self.fingerprint, "seed": self.seed,
                "pseudo_labels": self.labels.tolist(), "accepted_trial": self.accepted_trial.tolist(),
                "confidence": self.confidence.tolist(), "policy": self.policy,
                "calibration": self.calibration,
                "reference": None if self.reference is None else self.reference.tolist(),
                "guards": {name: _jsonable(sd) for name, sd in self.guards.items()}, "history": self.history, "termination_reason": self.termination_reason, **extra}

    @classmethod
    def from_json(cls, saved: dict, data: LoopData, fingerprint: str) -> "LoopState":
        """The state `to_json` saved, refused when it belongs to other images or settings."""
        if saved.get("format") != FORMAT:
            raise InputError(f"--resume: state.json has format {saved.get('format')!r}, this autolabel reads "
                             f"{FORMAT}; finish the run with the version that started it, or start a new run")
        if saved.get("fingerprint") != fingerprint:
            raise InputError("--resume: the images or settings differ from the ones the run started with "
                             "(fingerprint mismatch); resume with the same inputs, or start a new run")
        return cls(data=data, labels=np.asarray(saved["pseudo_labels"], np.int64),
                   confidence=np.asarray(saved["confidence"], np.float32),
                   accepted_trial=np.asarray(saved["accepted_trial"], np.int64),
                   policy=saved["policy"], guards=saved["guards"], columns={}, seed=saved["seed"],
                   fingerprint=fingerprint, calibration=dict(saved["calibration"]),
                   reference=None if saved["reference"] is None else np.asarray(saved["reference"], np.float32),
                   history=list(saved["history"]), n_trials=int(saved["trial"]),
                   termination_reason=saved["termination_reason"])


def _jsonable(state: dict) -> dict:
    """A state_dict with its numpy arrays as lists (guards keep per-image arrays in theirs)."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state.items()}
