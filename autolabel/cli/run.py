"""The root command: `autolabel [--data-clean ...] [--n-trials 10] [--threshold 0.8] ...` runs the
loop; `autolabel --resume DIR` continues a run that was killed, after its last completed trial."""
from __future__ import annotations

import contextlib
import errno
import time
from pathlib import Path
from typing import Optional

import typer

from autolabel.audit import load_truth
from autolabel.cli.common import open_cache, print_skips, progress_enabled
from autolabel.config import LoopConfig, load_config
from autolabel.loop import NOTHING_MORE, PseudoLabeler
from autolabel.outputs import RunWriter
from autolabel.plots import write_pictures
from autolabel.resume import clean_after, config_changes, read_run
from autolabel.settings import disk_full_message, given, resolve_configs, resolve_sources
from classification import distributed
from classification.cache import FeatureCache
from classification.config import TrainConfig, resolve_device
from classification.data import dedupe, load_labeled, load_unlabeled
from classification.errors import InputError
from classification.models import check_model_name


def run_loop(data_clean: Optional[Path], data_raw: Optional[Path], out: Optional[Path],
             config: Optional[Path], truth: Optional[Path], test: Optional[Path],
             cache_dir: Optional[Path], train_flags: dict, loop_flags: dict,
             tracking: Optional[dict] = None, resume: Optional[Path] = None) -> None:
    """`tracking`: None = off, else {"uri": ..., "experiment": ...} for `autolabel.tracking.start`.
    `resume`: a run folder to continue (the other settings, when given, must match its own)."""
    if resume is not None:
        data_flags = {"data_clean": data_clean, "data_raw": data_raw, "truth": truth, "test": test}
        return _resume(resume, out, config, cache_dir, data_flags, train_flags, loop_flags, tracking)
    train_cfg, loop_cfg = resolve_configs(config, train_flags, loop_flags)
    check_model_name(train_cfg.model)  # before --out exists: a typo must not leave a run folder behind
    sources = resolve_sources(data_clean, data_raw, truth, test)
    with distributed.collective():  # under torchrun: rank 0 makes the folder, the others learn its name
        out = distributed.broadcast(_out_dir(out) if distributed.is_main() else None)
    resolved = {"train": train_cfg.to_dict(), "loop": loop_cfg.to_dict(), "data": _data_section(*sources)}
    _execute(out, resolved, None, cache_dir, tracking, resumed=False)


def _resume(folder: Path, out: Optional[Path], config: Optional[Path], cache_dir: Optional[Path],
            data_flags: dict, train_flags: dict, loop_flags: dict, tracking: Optional[dict]) -> None:
    if out is not None and out.resolve() != folder.resolve():
        raise InputError("--resume DIR continues the run in DIR; leave out --out")
    saved, state = read_run(folder)
    # both sides through the config classes, so a setting added since the run started reads as its default
    changes = config_changes(_requested(saved, None, {}, {}, {}),
                             _requested(saved, config, data_flags, train_flags, loop_flags))
    if changes:
        more = f" (and {len(changes) - 1} more setting(s))" if len(changes) > 1 else ""
        raise InputError(f"--resume {folder}: the saved run has {changes[0]}{more}; resume without "
                         "changing settings, or start a new run with another --out")
    if state and state.get("finished"):  # nothing to redo: say so, and succeed
        typer.echo(f"autolabel: {folder} already finished ({state['trial']} trials, stopped: "
                   f"{state['termination_reason']}); nothing to resume. dataset: {folder / 'dataset.csv'}")
        return
    done = state["trial"] if state else 0
    if distributed.is_main():
        clean_after(folder, done)
    if cache_dir is None and state and state.get("cache_dir"):
        cache_dir = Path(state["cache_dir"])
    typer.echo(f"autolabel: resuming {folder} after trial {done}" if done else
               f"autolabel: resuming {folder} from the start (no trial had completed)")
    _execute(folder, saved, state, cache_dir, tracking, resumed=True)


def _requested(saved: dict, config: Optional[Path], data_flags: dict, train_flags: dict, loop_flags: dict) -> dict:
    """The saved run's settings with --config and the flags given on top, resolved like a new run's."""
    train_yaml, loop_yaml = load_config(config)
    train = TrainConfig.from_dict({**saved["train"], **train_yaml, **given(train_flags)})
    loop = LoopConfig(**{**saved["loop"], **loop_yaml, **given(loop_flags)})
    data = {**saved["data"], **{k: str(v.resolve()) for k, v in given(data_flags).items()}}
    return {"train": train.to_dict(), "loop": loop.to_dict(), "data": data}


def _execute(out: Path, resolved: dict, state: Optional[dict], cache_dir: Optional[Path],
             tracking: Optional[dict], resumed: bool) -> None:
    """Load the data `resolved` names, run (or continue, from `state`) the loop, write everything.
    config.yaml is written once the images are found and hashed: from then on `--resume` works."""
    train_cfg, loop_cfg = TrainConfig.from_dict(resolved["train"]), LoopConfig(**resolved["loop"])
    data = resolved["data"]
    labeled, pool = load_labeled(data["data_clean"]), load_unlabeled(data["data_raw"])
    test_set = load_labeled(data["test"], classes=labeled.classes) if data["test"] else None
    if not distributed.is_main():  # a torchrun rank other than 0: compute with rank 0, write nothing
        PseudoLabeler(loop_cfg, train_cfg, FeatureCache(None)).fit(labeled, pool, test=test_set, resume=state)
        return
    truth_idx = load_truth(data["truth"], dedupe(labeled, pool)[1], labeled.classes) if data["truth"] else None
    cache = open_cache(cache_dir)
    tracker = _tracker(tracking, out, resolved, train_cfg, state.get("mlflow_run_id") if state else None)
    run_info = {"mlflow_run_id": tracker.run_id if tracker else None,
                "cache_dir": str(cache.root.resolve()) if cache.root else None}
    writer = RunWriter(out, resolved, truth=truth_idx, run_info=run_info, write_config=not resumed)
    typer.echo(f"autolabel: {len(labeled)} human labels in {len(labeled.classes)} classes, "
               f"{len(pool)} unlabelled images -> {out}")
    labeler = PseudoLabeler(loop_cfg, train_cfg, cache, progress=progress_enabled(),
                            callbacks=[writer] + ([tracker] if tracker else []),
                            epoch_callbacks=[tracker.on_epoch] if tracker else [])
    try:
        labeler.fit(labeled, pool, test=test_set, resume=state)
        metrics = writer.finish(labeler)
        write_pictures(labeler, out)
        writer.commit(labeler, finished=True)
    except BaseException as e:
        if tracker:
            tracker.fail("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise InputError(disk_full_message(e, out)) from None
        raise
    if tracker:
        tracker.finish(labeler, out)
    _report(labeler, metrics, _unique(labeled.skipped + pool.skipped + labeler.skipped_), out, tracker)


def _unique(skipped: list) -> list:
    """One line per file: a file skipped while loading is not listed again when decoding fails."""
    return list({path: (path, why) for path, why in reversed(skipped)}.values())[::-1]


def _report(labeler, metrics: dict, skipped: list, out: Path, tracker) -> None:
    _summary(metrics)
    if labeler.termination_reason_ in ("nothing_new", "no_change"):
        typer.echo(NOTHING_MORE)
    print_skips(typer.echo, skipped)
    typer.echo(f"stopped: {labeler.termination_reason_}; dataset: {out / 'dataset.csv'}")
    if tracker and tracker.describe():
        typer.echo(tracker.describe())


def _tracker(tracking: Optional[dict], out: Path, resolved: dict, train_cfg: TrainConfig,
             resumed_from: Optional[str] = None):
    """The MLflow tracker (started: the parent run exists), or None with --no-mlflow. A resumed run
    gets a new parent with param `resumed_from` (the killed run's parent, marked KILLED if it still
    shows RUNNING); tracking problems stay warnings, as in `autolabel.tracking`."""
    if tracking is None:
        return None
    from autolabel.tracking import start

    mode = train_cfg.resolved_mode(resolve_device(train_cfg.device))  # "auto" says little in a comparison
    params = {"mode": mode, **({"resumed_from": resumed_from} if resumed_from else {})}
    tracker = start(out, resolved, tracking_uri=tracking.get("uri"), experiment=tracking.get("experiment"),
                    run_name=out.name, params=params)
    if resumed_from and tracker.active and tracker.client is not None:
        with contextlib.suppress(Exception):  # another store, or a deleted run: nothing to close
            if tracker.client.get_run(resumed_from).info.status == "RUNNING":
                tracker.client.set_terminated(resumed_from, "KILLED")
    return tracker


def _data_section(data_clean, data_raw, truth, test) -> dict:
    """Absolute paths, so `--resume` finds the same images from any working folder."""
    def absolute(p):
        return str(Path(p).resolve()) if p else None

    return {"data_clean": absolute(data_clean), "data_raw": absolute(data_raw),
            "test": absolute(test), "truth": absolute(truth)}


def _out_dir(out: Optional[Path]) -> Path:
    out = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if any((out / name).exists() for name in ("config.yaml", "state.json", "metrics.json")):
        raise InputError(f"--out {out} already holds a run; continue it with `autolabel --resume {out}`, "
                         "or choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"--out {out} is not writable: {e.strerror or e}") from None
    return out


def _summary(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="autolabel trials")
    cols = ["trial", "accepted", "new", "dropped", "refused OOD", "coverage", "val acc", "test acc", "precision"]
    for c in cols:
        table.add_column(c, justify="right")
    for r in metrics["trials"]:
        prec = r.get("audit", {}).get("precision")
        table.add_row(str(r["trial"]), str(r["accepted"]), str(r["newly_accepted"]), str(r["dropped"]),
                      str(r.get("refused_ood", "")), f"{r['coverage']:.1%}", _pct(r.get("val_accuracy")), _pct(r.get("test_accuracy")),
                      _pct(prec))
    final = metrics["final"]
    table.add_row("final", str(final["pseudo_labels"]), "", "", str(final.get("refused_ood", "")), f"{final['pseudo_labels'] / max(final['pool'], 1):.1%}",
                  "", _pct(final.get("test_accuracy")), _pct(final.get("audit", {}).get("precision")))
    Console().print(table)


def _pct(x) -> str:
    return "" if x is None or x != x else f"{x:.1%}"
