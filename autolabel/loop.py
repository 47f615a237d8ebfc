"""`PseudoLabeler`: the autolabel loop, shaped like scikit-learn's SelfTrainingClassifier.

One trial: (a) train on human labels + the pseudo-labels accepted so far (strong views for the
pseudo-labels; validation from human labels only), (b) predict the pool with the weak transform,
(c) calibrate the probabilities (`autolabel.calibration`: a temperature fitted in trial 1 on
cross-validated human labels; trial 1's calibrated probabilities are the reference that
estimated precision is measured with), (d) decide per image (`autolabel.decision`): the threshold policy, the target
precision's bars, then the guards (out-of-class refusal, class-balance cap), (e) re-decide every
pseudo-label (or keep them, with `sticky`).
After the last trial one more fit on the final labels gives the model, so 0 trials is plain
supervised training.

What the loop works on is a `LoopData`, what it has produced a `LoopState` (autolabel.state):
`state_dict()` / `load_state_dict()` save and restore it, and callbacks read it.

Callbacks: each trial callback gets `(record, state)` after its trial; each epoch callback gets
every training epoch's record (see `classification.train.stage.run_stage`) with `trial` added: the
trial it trains for, or None for the final fit.

Under torchrun every rank runs `fit` (extraction and fine-tuning are collective); rank 0 alone
decides, and the others take its state after every step that decides something.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from autolabel import hooks
from autolabel.calibration import cv_temperature, scale_probs
from autolabel.config import LoopConfig
from autolabel.decision import decide
from autolabel.guards import GuardContext, create_guards
from autolabel.policies import create_policy
from autolabel.resume import fingerprint
from autolabel.state import LoopData, LoopState
from autolabel.trainset import reviewed_rows, training_set
from classification import distributed
from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.data import UNLABELED, ImageSet, dedupe, stratified_split
from classification.engine import FitResult, fit, sized

_logger = logging.getLogger(__name__)

NOTHING_MORE = "Pseudo labeling done. Nothing more to label."
TrialCallback = Callable[[dict, LoopState], None]
EpochCallback = Callable[[dict], None]


class PseudoLabeler:
    """Label an unlabelled pool from a few human labels.

    After `fit`: `data_` (LoopData) and `state_` (LoopState), and, read from them in
    scikit-learn's style (over the de-duplicated `unlabeled_` pool unless said otherwise):
        pseudo_labels_: (N,) accepted class, -1 = none.
        confidence_: (N,) confidence of the latest prediction.
        ood_score_: (N,) distance to the k-th nearest human label (NaN without the guard).
        ood_refused_: (N,) refused by the out-of-class guard.
        labeled_trial_: (N_human + N,) 0 = human label, i = accepted in trial i, -1 = never.
        n_trials_: trials run.  termination_reason_: why the loop stopped.
        history_: one record per trial.  model_: the final FitResult.
        test_accuracy_, test_pred_: the final model on `test` ((N_test,), -1 = undecodable), or None.
    """

    def __init__(self, loop: LoopConfig = LoopConfig(), train: TrainConfig = TrainConfig(),
                 cache: FeatureCache | None = None, callbacks: list[TrialCallback] = (),
                 progress: bool = False, epoch_callbacks: list[EpochCallback] = ()):
        self.loop, self.train, self.cache = loop, train, cache or FeatureCache(None)
        self.callbacks, self.progress = list(callbacks), progress
        self.epoch_callbacks = list(epoch_callbacks)

    def fit(self, labeled: ImageSet, unlabeled: ImageSet, test: ImageSet | None = None,
            resume: dict | None = None, reviewed: dict[str, str | None] | None = None) -> "PseudoLabeler":
        """Run the loop. `test` (optional, labelled) is only scored, never used to decide anything.
        `resume`: a run's saved state (`state_dict()`, as state.json keeps it); the loop continues
        after its last trial, and refuses when the images or settings are not the ones it was saved with.
        `reviewed`: pool path -> the class a person gave it (None: rejected without one), see
        autolabel.review.feedback; human labels (or never labelled) from the next trial on, and a
        run that had stopped goes on."""
        with distributed.collective():  # under torchrun every rank runs this; rank 0 decides
            self._prepare(labeled, unlabeled, test)
            if resume is not None:
                self.load_state_dict(resume)
            else:
                self._fit_guards()
            if reviewed:
                self._apply_review(reviewed)
            self._run_trials(reopened=bool(reviewed))
            hooks.reached("final", self.state_.n_trials)
            self.state_.model = self._fit_current(None)
            self.state_.test_pred = self._test_predictions(self.state_.model)
        self.state_.test_accuracy = self._accuracy(self.state_.test_pred)
        return self

    # -- state ---------------------------------------------------------------------------
    def state_dict(self, finished: bool = False, **extra) -> dict:
        """The loop's state after the last completed trial, as JSON (what state.json holds)."""
        return self.state_.to_json(finished, **extra)

    def load_state_dict(self, saved: dict) -> None:
        """Continue from `saved` (see `state_dict`); the policy and guards take their saved state."""
        self.state_ = LoopState.from_json(saved, self.data_, self.state_.fingerprint)
        self.policy_.load_state_dict(self.state_.policy)
        for guard in self.guards_:
            guard.load_state_dict(self.state_.guards[guard.name])
        self._sync_guards()

    def _apply_review(self, reviewed: dict[str, str | None]) -> None:
        """Reviewed images stop being pseudo-labels now; the reviewed guard keeps them so."""
        guard = next(g for g in self.guards_ if g.name == "reviewed")
        guard.apply(reviewed, self.data_.pool.paths, self.data_.classes, self.state_.n_trials + 1)
        self.state_.labels[guard.excluded] = UNLABELED
        self.state_.accepted_trial[guard.excluded] = -1
        self._sync_guards()

    def _sync_guards(self) -> None:
        self.state_.guards = {g.name: g.state_dict() for g in self.guards_}
        self.state_.columns = {k: v for g in self.guards_ for k, v in g.columns.items()}

    # -- the run ---------------------------------------------------------------------------
    def _prepare(self, labeled: ImageSet, unlabeled: ImageSet, test: ImageSet | None) -> None:
        labeled, pool = dedupe(labeled, unlabeled)
        self.train = sized(self.train, labeled.paths + pool.paths)
        tr, va = stratified_split(labeled.labels, self.train.val_fraction, self.train.seed)
        self.data_ = LoopData(labeled, pool, labeled.subset(tr), labeled.subset(va), test)
        self.policy_ = create_policy(self.loop.policy, threshold=self.loop.threshold,
                                     n_classes=len(labeled.classes), n_unlabeled=len(pool),
                                     warmup=self.loop.flex_warmup, floor=self.loop.flex_floor,
                                     n_trials=self.loop.n_trials, start=self.loop.growth_start)
        self.guards_ = create_guards(self.loop)
        self.state_ = LoopState.empty(self.data_, self.train.seed, fingerprint(self.data_, self.train, self.loop))
        self.state_.policy = self.policy_.state_dict()

    def _fit_guards(self) -> None:
        """Every rank fits the guards (their embedding is collective); rank 0's state is kept."""
        ctx = GuardContext(self.data_, self.train, self.cache, self.progress)
        for guard in self.guards_:
            guard.fit(ctx)
            guard.load_state_dict(distributed.broadcast(guard.state_dict()))
        self._sync_guards()

    def _run_trials(self, reopened: bool = False) -> None:
        """Trials after the last completed one (all of them on a fresh run) until a stop or the budget;
        `reopened`: a review came in, so a run that had stopped goes on."""
        state = self.state_
        if state.history and state.history[-1]["stop"] and not reopened:  # a resumed run that had already stopped
            state.termination_reason = state.history[-1]["stop"]
            return
        for trial in range(state.n_trials + 1, self.loop.n_trials + 1):
            record = self._trial(trial)
            state.n_trials = trial
            state.history.append(record)
            for cb in self.callbacks:
                cb(record, state)
            if record["stop"]:
                state.termination_reason = record["stop"]
                break

    def _n_human(self) -> int:
        """Human labels a fit trains on: the user's training split and the reviewed pool images."""
        return len(self.data_.train_human) + len(reviewed_rows(self.state_))

    def _fit_current(self, trial: int | None) -> FitResult:
        data, state = self.data_, self.state_
        train, strong, weight = training_set(data, state, self.loop.confidence_weight)
        result = fit(self.train, train, data.val, self.cache, strong=strong, sample_weight=weight,
                     progress=self.progress, on_epoch=self._epoch_hook(trial))
        state.skipped += result.skipped
        return result

    def _epoch_hook(self, trial: int | None) -> EpochCallback:
        def on_epoch(record: dict) -> None:
            hooks.reached("train", trial)
            for cb in self.epoch_callbacks:
                cb({**record, "trial": trial})

        return on_epoch

    def _trial(self, trial: int) -> dict:
        result = self._fit_current(trial)
        views = self.loop.weak_views
        pred = result.predict_probs(self.data_.pool, self.cache, kind="eval" if views == 1 else "weak",
                                    n_views=views, progress=self.progress)
        self.state_.skipped += pred.skipped
        test_accuracy = self._accuracy(self._test_predictions(result))
        probs = self._calibrate(pred.probs)
        record = self._decide(trial, result, probs, pred) if distributed.is_main() else None
        if record is not None:
            record.update(test_accuracy=test_accuracy, **self.state_.calibration)
        state = self.state_
        shared = distributed.broadcast((record, state.labels, state.confidence, state.accepted_trial, state.policy))
        record, state.labels, state.confidence, state.accepted_trial, state.policy = shared
        return record

    def _calibrate(self, probs: np.ndarray) -> np.ndarray:
        """`probs` scaled by the run's temperature. The first trial fits it on cross-validated human
        labels (every rank fits the fold heads: fitting is collective), and its calibrated
        probabilities, from a head that saw human labels only, become the reference."""
        state = self.state_
        if not state.calibration:
            temperature, cv_accuracy = 1.0, None
            if self.loop.calibration == "cv":
                temperature, cv_accuracy = cv_temperature(self.train, self.data_.labeled, self.cache,
                                                          self.loop.calibration_folds)
            state.calibration = {"temperature": temperature, "cv_accuracy": cv_accuracy}
        probs = scale_probs(probs, state.calibration["temperature"])
        if state.reference is None:
            state.reference = probs
        return probs

    def _decide(self, trial: int, result: FitResult, probs: np.ndarray, pred) -> dict:
        """Rank 0's part of a trial: the per-image decision, the new labels and the trial's record."""
        state = self.state_
        decision, tau, notes = decide(probs, pred.ok, self.policy_, self.guards_, self.loop.target_precision,
                                      state.reference)
        before = state.labels.copy()
        state.apply(trial, decision.accepted, decision.guess, decision.confidence, self.loop.sticky)
        state.prediction, state.policy = decision, self.policy_.state_dict()
        return {**self._record(trial, result, before, tau, pred.skipped), **notes}

    def _excluded(self) -> np.ndarray:
        """Pool images some guard will never let through (for example refused as out-of-class)."""
        out = np.zeros(len(self.data_.pool), bool)
        for guard in self.guards_:
            out |= guard.excluded
        return out

    def _test_predictions(self, result: FitResult) -> np.ndarray | None:
        test = self.data_.test
        if test is None or len(test) == 0:
            return None
        return result.predict(test, self.cache)

    def _accuracy(self, test_pred: np.ndarray | None) -> float | None:
        if test_pred is None:
            return None
        ok = test_pred >= 0
        return float((test_pred[ok] == self.data_.test.labels[ok]).mean())

    def _record(self, trial, result, before, tau, skipped) -> dict:
        now, conf = self.state_.labels, self.state_.confidence
        newly = int(((now >= 0) & (before < 0)).sum())
        n_acc = int((now >= 0).sum())
        est, est_per_class = self.state_.estimated_precision()
        stop = _stop_reason(trial, now, before, newly, self._excluded())
        if stop in ("nothing_new", "no_change"):
            _logger.info(NOTHING_MORE)
        return {"trial": trial, "accepted": n_acc, "newly_accepted": newly,
                "dropped": int(((before >= 0) & (now < 0)).sum()),
                "coverage": n_acc / max(len(now), 1), "mean_confidence": float(conf[now >= 0].mean()) if n_acc else 0.0,
                "thresholds": {c: float(t) for c, t in zip(self.data_.classes, tau)},
                "estimated_precision": est,
                "estimated_precision_per_class": est_per_class,
                "val_accuracy": result.best.get("val_accuracy"), "val_macro_f1": result.best.get("val_macro_f1"),
                "train_size": self._n_human() + int((before >= 0).sum()),
                "skipped": len(skipped), "stop": stop}

    # -- scikit-learn style fitted attributes, read from the state -----------------------------
    pseudo_labels_ = property(lambda self: self.state_.labels)
    confidence_ = property(lambda self: self.state_.confidence)
    accepted_trial_ = property(lambda self: self.state_.accepted_trial)
    n_trials_ = property(lambda self: self.state_.n_trials)
    termination_reason_ = property(lambda self: self.state_.termination_reason)
    history_ = property(lambda self: self.state_.history)
    skipped_ = property(lambda self: self.state_.skipped)
    model_ = property(lambda self: self.state_.model)
    test_pred_ = property(lambda self: self.state_.test_pred)
    test_accuracy_ = property(lambda self: self.state_.test_accuracy)
    ood_score_ = property(lambda self: self.state_.columns["ood_score"])
    ood_refused_ = property(lambda self: self.state_.columns["ood_refused"])
    ood_ = property(lambda self: next((g for g in self.guards_ if g.name == "ood" and g.summary_), None))
    labeled_ = property(lambda self: self.data_.labeled)
    unlabeled_ = property(lambda self: self.data_.pool)
    classes_ = property(lambda self: self.data_.classes)

    @property
    def labeled_trial_(self) -> np.ndarray:
        return np.concatenate([np.zeros(len(self.data_.labeled), np.int64), self.state_.accepted_trial])


def _stop_reason(trial: int, now: np.ndarray, before: np.ndarray, newly: int, excluded: np.ndarray) -> str | None:
    """Why the loop stops after this trial, or None to go on."""
    if int((now >= 0).sum()) == int((~excluded).sum()) and len(now):
        return "all_labeled"
    if trial > 1 and np.array_equal(now, before):
        return "no_change"
    if newly == 0:
        return "nothing_new"
    return None
