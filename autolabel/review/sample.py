"""The sample a person reviews: drawn at random from a finished run's accepted pseudo-labels, and
recorded (RUN/review/sample.json) with its seed and a digest of the labels it was drawn from, so
that `certify` can tell whether it still describes the run.

A sample of size N is the first N of one seeded permutation of the accepted labels (sorted by
path), so with the same seed a larger N extends a smaller one: the reviews already made still
belong to it. `per_class` does the same within each predicted class (N per class).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from classification.data import load_class_map
from classification.digest import damaged, seal_ok
from classification.errors import InputError, first_line

FORMAT = 1          # sample.json layout
ALL = "all"         # the one stratum of a uniform sample


@dataclass(frozen=True)
class RunLabels:
    """A finished run's accepted pseudo-labels, as review and certify see them."""
    folder: Path                     # the run folder
    trial: int                       # the trial whose accepted labels these are
    fingerprint: str                 # the run's images and settings (state.json)
    mlflow_run_id: str | None        # the run's MLflow parent, if tracked
    mlflow_tracking_uri: str | None  # where it was tracked (runs from before this was saved: None)
    classes: list[str]               # the run's classes, in its order
    frame: pd.DataFrame              # path,label,confidence per accepted pseudo-label, sorted by path

    @property
    def digest(self) -> str:
        """Identity of the accepted (path, label) pairs: any label added, dropped or changed alters it."""
        lines = "".join(f"{p}\t{lab}\n" for p, lab in zip(self.frame.path, self.frame.label))
        return hashlib.sha256(lines.encode()).hexdigest()[:20]

    def counts(self) -> dict[str, int]:
        return {c: int(n) for c, n in self.frame.label.value_counts().items()}


def read_run_labels(folder: str | Path) -> RunLabels:
    """The accepted pseudo-labels of the finished run in `folder`, or a one-line error."""
    folder = Path(folder)
    try:
        state = json.loads((folder / "state.json").read_text())
        frame = pd.read_csv(folder / "dataset.csv", dtype={"path": str, "label": str, "source": str},
                            keep_default_na=False)
    except FileNotFoundError as e:
        raise InputError(f"{folder} holds no run with a completed trial ({Path(e.filename).name} is missing)") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InputError(f"cannot read the run in {folder}: {first_line(e)}") from None
    if not isinstance(state, dict) or seal_ok(state) is False:
        raise InputError(f"the run in {folder} is damaged: state.json does not match its SHA-256")
    if not state.get("finished"):
        raise InputError(f"the run in {folder} has not finished; finish it first (`autolabel --resume {folder}`)")
    if damaged(folder, {k: v for k, v in (state.get("outputs") or {}).items() if k == "dataset.csv"}):
        raise InputError(f"{folder / 'dataset.csv'} is damaged (its SHA-256 does not match state.json); "
                         f"`autolabel --resume {folder}` writes it again")
    if not {"path", "label", "source", "confidence"} <= set(frame.columns):
        raise InputError(f"{folder / 'dataset.csv'} lacks the columns path,label,source,confidence of a run")
    classes_file = folder / "checkpoint" / "classes.json"
    classes = (load_class_map(classes_file) if classes_file.is_file()
               else sorted(set(frame.label[frame.source == "human"])))
    pseudo = frame[frame.source == "pseudo"][["path", "label", "confidence"]]
    return RunLabels(folder, int(state["trial"]), state.get("fingerprint", ""), state.get("mlflow_run_id"),
                     state.get("mlflow_tracking_uri"), classes,
                     pseudo.sort_values("path", kind="stable").reset_index(drop=True))


@dataclass(frozen=True)
class Sample:
    """What was drawn, from which labels; `items` are in review order."""
    run: str                      # the run folder, absolute
    fingerprint: str              # the run's fingerprint when drawn
    trial: int                    # the trial whose accepted labels were sampled
    labels_digest: str            # RunLabels.digest when drawn
    seed: int                     # the permutation's seed
    size: int                     # asked size: in all, or per class with per_class
    per_class: bool               # stratified by predicted class (bounds per class only)
    classes: list[str]            # the run's classes
    population: dict[str, int]    # accepted labels per class when drawn
    items: list[dict]             # path, label, confidence, stratum (class or "all"), rank in stratum

    @property
    def id(self) -> str:
        parts = [self.fingerprint, self.labels_digest, self.seed, self.per_class,
                 [(i["path"], i["label"]) for i in self.items]]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    @property
    def scope(self) -> str:
        if self.per_class:
            return f"the accepted pseudo-labels of each class in trial {self.trial}, one bound per class"
        return f"all accepted pseudo-labels of trial {self.trial}"

    def to_json(self) -> dict:
        return {"format": FORMAT, "id": self.id, **asdict(self)}

    @classmethod
    def from_json(cls, raw: dict) -> "Sample":
        if raw.get("format") != FORMAT:
            raise InputError(f"sample.json has format {raw.get('format')!r}; this autolabel reads {FORMAT}; "
                             "draw the sample again with `autolabel review RUN`")
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})


def draw(labels: RunLabels, size: int, seed: int = 0, per_class: bool = False) -> Sample:
    """`size` accepted labels drawn uniformly at random (or `size` per predicted class)."""
    if size < 1:
        raise InputError(f"--sample must be >= 1, got {size}")
    frame = labels.frame
    if frame.empty:
        raise InputError(f"the run in {labels.folder} accepted no pseudo-labels: nothing to review")
    rng = np.random.default_rng(seed)
    if per_class:
        strata = [(c, np.flatnonzero(frame.label.to_numpy() == c)) for c in labels.classes]
    else:
        strata = [(ALL, np.arange(len(frame)))]
    items = []
    for stratum, rows in strata:
        if len(rows) == 0:
            continue
        order = rows[rng.permutation(len(rows))][:size]  # the whole permutation first: larger sizes extend
        items += [{"path": frame.path[i], "label": frame.label[i], "confidence": round(float(frame.confidence[i]), 6),
                   "stratum": stratum, "rank": r} for r, i in enumerate(order)]
    class_pos = {c: k for k, c in enumerate(labels.classes)}
    items.sort(key=lambda it: (it["rank"], class_pos.get(it["stratum"], -1)))  # per class: round robin
    return Sample(str(labels.folder.resolve()), labels.fingerprint, labels.trial, labels.digest, seed, size,
                  per_class, list(labels.classes), labels.counts(), items)


def load_sample(path: str | Path) -> Sample:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no review sample at {path}; draw one with `autolabel review {path.parent.parent}`")
    try:
        return Sample.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"cannot read the review sample {path}: {first_line(e)}") from None

