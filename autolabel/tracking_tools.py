"""MLflow runs besides the loop's (autolabel.tracking): the grid, `lr-find` and `train --folds`.

    grid      parent  params: the grid spec (`grid.threshold` = "0.7,0.9"), the shared settings,
                      the ranking metric; metrics: best_<metric>; artifact: grid.csv
              child   one per combination (run name `threshold=0.7,policy=fixed`); params: the
                      resolved config flattened, the short names (threshold, policy, mode, model)
                      and the grid keys by their field names; metrics: the final numbers
                      (test_accuracy, precision, val_macro_f1, coverage, accepted) and each trial's
                      as `trial_*` series (step = trial); artifacts: dataset.csv, metrics.json
    lr-find   params: the train config, the sweep; metrics: suggested_lr, and lr_find_loss,
              lr_find_raw_loss, lr_find_lr per step; artifacts: lr_find.png, lr_find.json
    folds     params: the train config, n_folds; metrics: fold_accuracy, fold_macro_f1 (step =
              fold; fold_test_* with a test split), <score>_mean and <score>_std; artifact: folds.json

All build on autolabel.tracking_client, so the loop's rules hold: mlflow is imported only once a
run starts, and the first MLflow error is one warning, after which tracking is off and the
command carries on.
"""
from __future__ import annotations

from pathlib import Path

from autolabel.tracking import short_params, trial_metrics
from autolabel.tracking_client import TrackingClient
from autolabel.tracking_store import DEFAULT_EXPERIMENT

FINAL = ("test_accuracy", "precision", "val_macro_f1", "val_accuracy", "coverage", "accepted", "refused_ood",
         "trials")


def tracking_choice(mlflow: bool | None, uri: str | None, experiment: str | None,
                    root: dict | None = None) -> dict | None:
    """A command's --mlflow/--no-mlflow, --tracking-uri and --experiment; what it leaves unset
    comes from the root command's (`autolabel --no-mlflow lr-find ...`). None: tracking off."""
    root = root or {}
    on = mlflow if mlflow is not None else root.get("mlflow", True)
    if not on:
        return None
    return {"uri": uri or root.get("tracking_uri"),
            "experiment": experiment or root.get("experiment") or DEFAULT_EXPERIMENT}


def client_for(tracking: dict) -> TrackingClient:
    """A client for `tracking_choice`'s answer."""
    return TrackingClient(tracking.get("uri"), tracking.get("experiment"))


class GridTracker(TrackingClient):
    """The grid's parent run and one child per combination; `autolabel.grid.run_grid`'s tracker.

    Trials are not nested under the combinations: the MLflow UI shows a single nesting level
    (mlflow#834, #4563) and hides grandchildren, so each trial's numbers go onto its combination's
    run as `trial_*` series with step = trial. Epoch curves and checkpoints stay in each
    combination's folder (tag `autolabel.out`); `autolabel` on one setting tracks them in full.
    """

    def __init__(self, tracking: dict):
        super().__init__(tracking.get("uri"), tracking.get("experiment"))
        self.child: str | None = None

    def start(self, name: str, spec: dict[str, str], shared: dict, metric: str, out: Path) -> "GridTracker":
        def _start():
            params = {**{f"grid.{k}": v for k, v in spec.items()}, **shared, "metric": metric}
            self.run_id = self.open_run(name, params, {"autolabel.grid": "true", "autolabel.out": str(out.resolve())})
        self.safely(_start)
        return self

    def begin(self, combo, resolved: dict, folder: Path) -> None:
        def _begin():
            params = {**resolved, **short_params(resolved), "mode": _mode(resolved["train"]), **combo.params()}
            self.child = self.open_run(combo.name, params, {"autolabel.out": str(folder.resolve()),
                                                            "mlflow.parentRunId": self.run_id})
        self.safely(_begin)

    def __call__(self, record: dict, state) -> None:
        """Trial callback: the trial's numbers on the combination's run, step = trial."""
        self.safely(lambda: self.log_metrics(self.child, {f"trial_{k}": v for k, v in trial_metrics(record).items()},
                                             record["trial"]))

    def end(self, row: dict, folder: Path) -> None:
        def _end():
            self.log_metrics(self.child, {k: row.get(k) for k in FINAL}, row.get("trials") or 0)
            self.client.set_tag(self.child, "stop", str(row.get("stop")))
            self.log_files(self.child, [folder / "dataset.csv", folder / "metrics.json"])
            self.close(self.child)
            self.child = None
        self.safely(_end)

    def finish(self, ranked: list[dict], metric: str, grid_csv: Path) -> None:
        def _finish():
            best = ranked[0].get(metric) if ranked else None
            self.log_metrics(self.run_id, {f"best_{metric}": best, "combinations": len(ranked)})
            if ranked:
                self.client.set_tag(self.run_id, "best", ranked[0]["combination"])
            self.log_files(self.run_id, [grid_csv])
            self.close(self.run_id)
        self.safely(_finish)

    def fail(self, status: str = "FAILED") -> None:
        self.safely(self.close_all, status)


def _mode(train: dict) -> str:
    """head or finetune: "auto" says little in a comparison."""
    from classification.config import TrainConfig, resolve_device

    cfg = TrainConfig.from_dict(train)
    return cfg.resolved_mode(resolve_device(cfg.device))


def _one_run(tracking: dict, name: str, params: dict, tags: dict, log) -> str | None:
    """One finished run: `log(client, run_id)` fills it; returns the line saying where it went
    (None: tracking failed, with its one warning)."""
    runs = client_for(tracking)

    def _log():
        runs.run_id = runs.open_run(name, params, tags)
        log(runs, runs.run_id)
        runs.close(runs.run_id)
    runs.safely(_log)
    return runs.describe()


def track_lr_find(record: dict, out: Path, tracking: dict | None) -> str | None:
    """One run for an `lr-find` sweep; returns the line saying where it went (None: not tracked)."""
    if tracking is None:
        return None
    sweep = {k: record[k] for k in ("data_clean", "start", "end", "steps", "n_images", "optimizer")}
    params = {"train": record["config"], **sweep, "model": record["config"]["model"]}

    def log(runs: TrackingClient, run_id: str) -> None:
        runs.log_metrics(run_id, {"suggested_lr": record["suggested"], "steps_run": record["steps_run"]})
        runs.log_series(run_id, {"lr_find_loss": record["losses"], "lr_find_raw_loss": record["raw_losses"],
                                 "lr_find_lr": record["lrs"]})
        runs.log_files(run_id, [out / "lr_find.png", out / "lr_find.json"])
    return _one_run(tracking, f"lr-find-{out.name}", params, {"autolabel.command": "lr-find"}, log)


def track_folds(summary: dict, config: dict, out: Path, sources: dict, tracking: dict | None) -> str | None:
    """One run for `train --folds`: per-fold scores as series (step = fold), mean and std."""
    if tracking is None:
        return None
    params = {"train": config, **sources, "n_folds": summary["n_folds"], "n_images": summary["n_images"],
              "model": config["model"], "mode": _mode(config)}

    def log(runs: TrackingClient, run_id: str) -> None:
        folds = summary["folds"]
        series = {f"fold_{k}": [f[k] for f in folds] for k in summary["mean_std"]}
        series.update({f"fold_test_{k}": [f["test"][k] for f in folds] for k in summary.get("test_mean_std") or {}})
        runs.log_series(run_id, series, [f["fold"] for f in folds])
        for prefix, key in (("", "mean_std"), ("test_", "test_mean_std")):
            for score, s in (summary.get(key) or {}).items():
                runs.log_metrics(run_id, {f"{prefix}{score}_mean": s["mean"], f"{prefix}{score}_std": s["std"]})
        runs.log_files(run_id, [out / "folds.json"])
    return _one_run(tracking, f"folds-{out.name}", params, {"autolabel.command": "train --folds"}, log)
