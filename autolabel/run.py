"""The run driver: one place that turns resolved settings into a finished output folder. The root
command (`start`), `--resume` (`resume`) and `autolabel grid` (`run_loop`) all go through it.

    load inputs -> RunWriter + tracker -> PseudoLabeler.fit -> checkpoint, dataset, metrics
    -> pictures -> state.json marked finished; a failure marks the MLflow runs FAILED or KILLED

Under torchrun every rank runs the loop; rank 0 alone makes the folder, writes and tracks.
"""
from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from autolabel.audit import load_truth
from autolabel.config import LoopConfig
from autolabel.loop import PseudoLabeler
from autolabel.outputs import RunWriter
from autolabel.plots import write_pictures
from autolabel.resume import clean_after, config_changes, read_run, verified
from autolabel.review.feedback import keep_reviews, load_reviewed, reopen, reviewed_section
from autolabel.settings import (NothingToLabel, RunRequest, data_section, disk_full_message, new_out_dir, open_cache,
                                refuse_existing_run, refuse_out_inside, requested, resolve_configs,
                                resolve_sources)
from autolabel.state import LoopState
from classification import distributed
from classification.cache import FeatureCache
from classification.config import TrainConfig, resolve_device
from classification.engine import sized
from classification.data import ImageSet, dedupe, load_labeled, load_unlabeled
from classification.errors import InputError
from classification.fileio import write_text
from classification.locks import exclusive, run_lock
from classification.models import check_model_name

@dataclass(frozen=True)
class RunInputs:
    """The images a run labels, its optional test split and the pool's truth (audit only)."""
    data: dict                 # the data section they were loaded from (paths)
    labeled: ImageSet
    pool: ImageSet
    test: ImageSet | None
    truth: np.ndarray | None   # true class per de-duplicated pool image, -1 = unknown
    reviewed: dict | None = None  # pool path -> class a person gave, None = rejected (--reviewed)

    @classmethod
    def load(cls, data: dict, with_truth: bool = True) -> "RunInputs":
        """From a config's data section (data_clean, data_raw, test, truth: paths or None;
        reviewed: a list of review.csv files)."""
        labeled, pool = load_labeled(data["data_clean"]), load_unlabeled(data["data_raw"])
        left = dedupe(labeled, pool)[1]  # the pool the loop sees
        if not len(left):  # an empty or fully labelled pool is not an error
            error = InputError if pool.skipped and not len(pool) else NothingToLabel
            raise error(f"nothing to label: --data-raw {data['data_raw']} {_why_empty(pool)}")
        test = load_labeled(data["test"], classes=labeled.classes) if data.get("test") else None
        truth = None
        if with_truth and data.get("truth"):
            truth = load_truth(data["truth"], left, labeled.classes)
        return cls(data, labeled, pool, test, truth, load_reviewed(data.get("reviewed"), pool, labeled.classes))

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return self.labeled.skipped + self.pool.skipped


@dataclass
class RunOutcome:
    """A finished run: its folder, the loop's final state and metrics, every file skipped."""
    out: Path
    state: LoopState
    metrics: dict
    skipped: list[tuple[str, str]] = field(default_factory=list)
    tracker: object | None = None
    inputs: RunInputs | None = None


def run_loop(resolved: dict, inputs: RunInputs, out: Path, cache: FeatureCache, *, tracker=None,
             progress: bool = False, saved: dict | None = None, run_info: dict | None = None) -> RunOutcome:
    """Run (or, from `saved` state, continue) the loop on `inputs` into `out` and write everything.

    `tracker` (optional) is a trial callback with `fail(status)`, and `on_epoch` if it logs epochs;
    the caller starts and finishes it. config.yaml is written unless continuing a run.
    """
    train, loop = TrainConfig.from_dict(resolved["train"]), LoopConfig(**resolved["loop"])
    writer = RunWriter(out, resolved, truth=inputs.truth, run_info=run_info, write_config=saved is None,
                       outputs=(saved or {}).get("outputs"))
    epoch_callbacks = [tracker.on_epoch] if hasattr(tracker, "on_epoch") else []
    labeler = PseudoLabeler(loop, train, cache, progress=progress, epoch_callbacks=epoch_callbacks,
                            callbacks=[writer] + ([tracker] if tracker else []))
    try:
        labeler.fit(inputs.labeled, inputs.pool, test=inputs.test, resume=saved, reviewed=inputs.reviewed)
        metrics = writer.finish(labeler.state_)
        write_pictures(labeler.state_, out, cache)
        writer.commit(labeler.state_, finished=True)
    except BaseException as e:
        if tracker:
            tracker.fail("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise InputError(disk_full_message(e, out)) from None
        raise
    skipped = _unique(inputs.skipped + labeler.state_.skipped)
    return RunOutcome(out, labeler.state_, metrics, skipped, tracker, inputs)


def _why_empty(pool: ImageSet) -> str:
    if len(pool):
        return "holds only images that are also labelled"
    skipped = len(pool.skipped)
    return f"holds no usable image ({skipped} file(s) skipped, listed above)" if skipped else "holds no images"


def start(req: RunRequest) -> RunOutcome | None:
    """A new run as `req` asks (None on torchrun ranks other than 0, which write nothing)."""
    train_cfg, loop_cfg = resolve_configs(req.config, req.train, req.loop)
    check_model_name(train_cfg.model)  # before --out exists: a typo must not leave a run folder behind
    d = req.data
    sources = resolve_sources(d.get("data_clean"), d.get("data_raw"), d.get("truth"), d.get("test"))
    refuse_out_inside(req.out, sources)
    data = {**data_section(*sources), **reviewed_section(d.get("reviewed"))}
    with distributed.collective():  # under torchrun: rank 0 makes the folder, the others learn its name
        out = distributed.broadcast(new_out_dir(req.out) if distributed.is_main() else None)
    resolved = {"train": train_cfg.to_dict(), "loop": loop_cfg.to_dict(), "data": data}
    with _locked(out):
        if distributed.is_main():
            refuse_existing_run(out)  # again, now that no other process can start one there
        try:
            return _execute(out, resolved, None, req)
        except InputError:
            _discard_if_unused(out)
            raise


def _discard_if_unused(out: Path) -> None:
    """A start refused before writing anything (nothing to label) leaves no folder behind; called
    while holding the folder's lock, so the lock file is ours to remove."""
    if distributed.is_main() and {p.name for p in out.iterdir()} <= {run_lock(out).name}:
        run_lock(out).unlink(missing_ok=True)
        out.rmdir()


def _locked(folder: Path):
    """The run folder's lock (rank 0 writes; the other ranks of a torchrun write nothing)."""
    return exclusive(run_lock(folder), f"run folder {folder}") if distributed.is_main() else contextlib.nullcontext()


def resume(folder: Path, req: RunRequest) -> RunOutcome | dict | None:
    """Continue the run in `folder` after its last completed trial. Settings given in `req` must
    match the saved ones. Returns the saved state (a dict) when the run had already finished.
    A run another process is writing (still running) is refused."""
    if req.out is not None and req.out.resolve() != folder.resolve():
        raise InputError("--resume DIR continues the run in DIR; leave out --out")
    if not (folder / "config.yaml").is_file():
        read_run(folder)  # its one-line refusal, before a lock file is made in a folder that holds no run
    with _locked(folder):
        return _resume(folder, req)


def _resume(folder: Path, req: RunRequest) -> RunOutcome | dict | None:
    saved, state = read_run(folder)
    state = verified(folder, state)
    review = req.data.get("reviewed")
    if review is not None:  # the one change --resume takes (autolabel.review.feedback)
        saved, state, req = reopen(saved, state, req)
    # both sides through the config classes, so a setting added since the run started reads as its default
    changes = config_changes(requested(saved, RunRequest()), requested(saved, req))
    if changes:
        more = f" (and {len(changes) - 1} more setting(s))" if len(changes) > 1 else ""
        raise InputError(f"--resume {folder}: the saved run has {changes[0]}{more}; resume without "
                         "changing settings, or start a new run with another --out")
    if state and state.get("finished"):
        return state
    done = state["trial"] if state else 0
    if review is not None:
        req.echo(f"autolabel: review {review} fed back: human labels from trial {done + 1} on "
                 f"(trial budget {saved['loop']['n_trials']})")
    if distributed.is_main():
        clean_after(folder, done)
    cache_dir = req.cache_dir
    if cache_dir is None and state and state.get("cache_dir"):
        cache_dir = Path(state["cache_dir"])
    req.echo(f"autolabel: resuming {folder} after trial {done}" if done else
             f"autolabel: resuming {folder} from the start (no trial had completed)")
    return _execute(folder, saved, state, replace(req, cache_dir=cache_dir))


def _execute(out: Path, resolved: dict, state: dict | None, req: RunRequest) -> RunOutcome | None:
    """`_run` with, on Ctrl-C, the command that continues the run."""
    try:
        return _run(out, resolved, state, req)
    except KeyboardInterrupt:
        if distributed.is_main() and (out / "config.yaml").is_file():
            req.echo(f"autolabel: interrupted; continue with `autolabel --resume {out}`")
        raise


def _run(out: Path, resolved: dict, state: dict | None, req: RunRequest) -> RunOutcome | None:
    """Load the data `resolved` names, then run (or continue, from `state`) the loop into `out`."""
    train_cfg = TrainConfig.from_dict(resolved["train"])
    if not distributed.is_main():  # a torchrun rank other than 0: compute with rank 0, write nothing
        inputs = RunInputs.load(resolved["data"], with_truth=False)
        labeler = PseudoLabeler(LoopConfig(**resolved["loop"]), train_cfg, FeatureCache(None))
        labeler.fit(inputs.labeled, inputs.pool, inputs.test, resume=state, reviewed=inputs.reviewed)
        return None
    inputs = RunInputs.load(resolved["data"])
    train_cfg = sized(train_cfg, inputs.labeled.paths + inputs.pool.paths)
    resolved = {**resolved, "train": {**resolved["train"], "img_size": train_cfg.img_size}}  # config.yaml says what ran
    resolved = keep_reviews(out, resolved, state)  # once the reviews are checked against the images
    cache = open_cache(req.cache_dir)
    tracker = _tracker(req.tracking, out, resolved, train_cfg, _previous_run_id(out, state))
    if tracker and tracker.run_id:  # until state.json names it: a run killed in trial 1 can close it
        write_text(out / PARENT_FILE, tracker.run_id)
    run_info = {"mlflow_run_id": tracker.run_id if tracker else None,
                "mlflow_tracking_uri": tracker.tracking_uri if tracker else None,  # for `autolabel certify`
                "cache_dir": str(cache.root.resolve()) if cache.root else None}
    req.echo(f"autolabel: {len(inputs.labeled)} human labels in {len(inputs.labeled.classes)} classes, "
             f"{len(inputs.pool)} unlabelled images -> {out}")
    outcome = run_loop(resolved, inputs, out, cache, tracker=tracker, progress=req.progress,
                       saved=state, run_info=run_info)
    if tracker:
        tracker.finish(outcome.state, out)
    return outcome


def _unique(skipped: list) -> list:
    """One line per file: a file skipped while loading is not listed again when decoding fails."""
    return list({path: (path, why) for path, why in reversed(skipped)}.values())[::-1]


PARENT_FILE = ".mlflow_run_id"  # the run's MLflow parent, written as soon as it exists


def _previous_run_id(out: Path, state: dict | None) -> str | None:
    """The MLflow parent of the run being resumed: state.json's, else the one started before the
    first trial committed (`PARENT_FILE`), else None (a new run, or one tracked nowhere)."""
    if state:
        return state.get("mlflow_run_id")
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = (out / PARENT_FILE).read_text().strip()
        return text if text.isalnum() and len(text) <= 64 else None
    return None


def _tracker(tracking: dict | None, out: Path, resolved: dict, train_cfg: TrainConfig,
             resumed_from: str | None = None):
    """The MLflow tracker (started: the parent run exists), or None with --no-mlflow. A resumed run
    gets a new parent with param `resumed_from` (the killed run's parent, marked KILLED if it still
    shows RUNNING); tracking problems stay warnings, as in `autolabel.tracking`."""
    if tracking is None:
        return None
    from autolabel.tracking import start as start_tracking

    mode = train_cfg.resolved_mode(resolve_device(train_cfg.device))  # "auto" says little in a comparison
    params = {"mode": mode, **({"resumed_from": resumed_from} if resumed_from else {})}
    tracker = start_tracking(out, resolved, tracking_uri=tracking.get("uri"), experiment=tracking.get("experiment"),
                             run_name=out.name, params=params)
    if resumed_from and tracker.active and tracker.client is not None:
        with contextlib.suppress(Exception):  # another store, or a deleted run: nothing to close
            if tracker.client.get_run(resumed_from).info.status == "RUNNING":
                tracker.client.set_terminated(resumed_from, "KILLED")
    return tracker
