"""The root command: `autolabel [--data-clean ...] [--n-trials 10] [--threshold 0.8] ...` runs the loop."""
from __future__ import annotations

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
from classification.config import TrainConfig, resolve_device
from classification.data import dedupe, load_labeled, load_unlabeled
from classification.errors import InputError

BUNDLED = Path(__file__).resolve().parents[2] / "data"


def run_loop(data_clean: Optional[Path], data_raw: Optional[Path], out: Optional[Path],
             config: Optional[Path], truth: Optional[Path], test: Optional[Path],
             cache_dir: Optional[Path], train_flags: dict, loop_flags: dict,
             tracking: Optional[dict] = None) -> None:
    """`tracking`: None = off, else {"uri": ..., "experiment": ...} for `autolabel.tracking.start`."""
    train_cfg, loop_cfg = resolve_configs(config, train_flags, loop_flags)
    data_clean, data_raw, truth, test = resolve_sources(data_clean, data_raw, truth, test)
    out = _out_dir(out)
    labeled, pool = load_labeled(data_clean), load_unlabeled(data_raw)
    test_set = load_labeled(test, classes=labeled.classes) if test else None
    truth_idx = load_truth(truth, dedupe(labeled, pool)[1], labeled.classes) if truth else None
    resolved = {"train": train_cfg.to_dict(), "loop": loop_cfg.to_dict(),
                "data": {"data_clean": str(data_clean), "data_raw": str(data_raw),
                         "test": str(test) if test else None, "truth": str(truth) if truth else None}}
    writer = RunWriter(out, resolved, truth=truth_idx)
    tracker = _tracker(tracking, out, resolved, train_cfg)
    typer.echo(f"autolabel: {len(labeled)} human labels in {len(labeled.classes)} classes, "
               f"{len(pool)} unlabelled images -> {out}")
    labeler = PseudoLabeler(loop_cfg, train_cfg, open_cache(cache_dir), progress=progress_enabled(),
                            callbacks=[writer] + ([tracker] if tracker else []),
                            epoch_callbacks=[tracker.on_epoch] if tracker else [])
    try:
        labeler.fit(labeled, pool, test=test_set)
        metrics = writer.finish(labeler)
        write_pictures(labeler, out)
    except BaseException as e:
        if tracker:
            tracker.fail("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    if tracker:
        tracker.finish(labeler, out)
    _summary(metrics)
    if labeler.termination_reason_ in ("nothing_new", "no_change"):
        typer.echo(NOTHING_MORE)
    print_skips(typer.echo, labeled.skipped + pool.skipped)
    typer.echo(f"stopped: {labeler.termination_reason_}; dataset: {out / 'dataset.csv'}")
    if tracker and tracker.describe():
        typer.echo(tracker.describe())


def _tracker(tracking: Optional[dict], out: Path, resolved: dict, train_cfg: TrainConfig):
    """The MLflow tracker (started: the parent run exists), or None with --no-mlflow."""
    if tracking is None:
        return None
    from autolabel.tracking import start

    mode = train_cfg.resolved_mode(resolve_device(train_cfg.device))  # "auto" says little in a comparison
    return start(out, resolved, tracking_uri=tracking.get("uri"), experiment=tracking.get("experiment"),
                 run_name=out.name, params={"mode": mode})


def resolve_configs(config: Optional[Path], train_flags: dict, loop_flags: dict) -> tuple[TrainConfig, LoopConfig]:
    train_yaml, loop_yaml = load_config(config)
    train = {**train_yaml, **{k: v for k, v in train_flags.items() if v is not None}}
    loop = {**loop_yaml, **{k: v for k, v in loop_flags.items() if v is not None}}
    return TrainConfig.from_dict(train), LoopConfig(**loop)


def resolve_sources(data_clean, data_raw, truth, test):
    if data_clean is None and data_raw is None:
        if not (BUNDLED / "labeled").is_dir():
            raise InputError("no --data-clean/--data-raw given and the bundled sample data/ is not there")
        truth = truth or BUNDLED / "unlabeled_truth.csv"
        test = test or BUNDLED / "test"
        return BUNDLED / "labeled", BUNDLED / "unlabeled", truth, test
    if data_clean is None or data_raw is None:
        raise InputError("give both --data-clean (labelled) and --data-raw (unlabelled)")
    return data_clean, data_raw, truth, test


def _out_dir(out: Optional[Path]) -> Path:
    out = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if (out / "metrics.json").exists() or (out / "state.json").exists():
        raise InputError(f"--out {out} already holds a run; choose another folder")
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
