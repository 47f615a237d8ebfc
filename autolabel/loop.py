"""`PseudoLabeler`: the autolabel loop, shaped like scikit-learn's SelfTrainingClassifier.

One trial: (a) train on human labels + the pseudo-labels accepted so far (strong views for the
pseudo-labels; validation from human labels only), (b) predict the pool with the weak transform,
(c) let the threshold policy pick, (d) cap each class with the balance guard, (e) re-decide every
pseudo-label (or keep them, with `sticky`). With `ood_guard`, a pool image further from every
human label than the calibrated threshold is never accepted, whatever its confidence. After the
last trial one more fit on the final labels gives the model, so 0 trials is plain supervised
training. A run's state after each trial can be saved and resumed (`autolabel.resume`).

Callbacks: each trial callback gets `(record, labeler)` after its trial; each epoch callback gets
every training epoch's record (see `classification.trainer.run_stage`) with `trial` added: the
trial it trains for, or None for the final fit.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from autolabel.config import LoopConfig
from autolabel.guards import balance_cap
from autolabel.policies import create_policy
from autolabel.resume import crash_point, fingerprint, restore_state
from classification import distributed
from classification.cache import FeatureCache
from classification.config import TrainConfig
from classification.data import UNLABELED, ImageSet, dedupe, stratified_split
from classification.engine import FitResult, fit
from classification.inference import predict
from embeddings.features import Embedder
from embeddings.ood import KnnOOD

_logger = logging.getLogger(__name__)

NOTHING_MORE = "Pseudo labeling done. Nothing more to label."
TrialCallback = Callable[[dict, "PseudoLabeler"], None]
EpochCallback = Callable[[dict], None]


class PseudoLabeler:
    """Label an unlabelled pool from a few human labels.

    Fitted attributes (over the de-duplicated `unlabeled_` pool unless said otherwise):
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
            resume: dict | None = None) -> "PseudoLabeler":
        """Run the loop. `test` (optional, labelled) is only scored, never used to decide anything.
        `resume`: a run's saved state (see `autolabel.resume`); the loop continues after its last
        trial, and refuses when the images or settings are not the ones the state was saved with."""
        with distributed.collective():  # under torchrun every rank runs this; rank 0 decides
            self._prepare(labeled, unlabeled, test)
            if resume is not None:
                restore_state(self, resume)
            else:
                self._fit_ood_guard()
            self._run_trials()
            crash_point("final", self.n_trials_)
            self.model_ = self._fit_current(None)
            self.test_pred_ = self._test_predictions(self.model_)
        self.test_accuracy_ = self._accuracy(self.test_pred_)
        return self

    def _prepare(self, labeled: ImageSet, unlabeled: ImageSet, test: ImageSet | None) -> None:
        self.test_ = test
        labeled, pool = dedupe(labeled, unlabeled)
        self.labeled_, self.unlabeled_, self.classes_ = labeled, pool, labeled.classes
        tr, va = stratified_split(labeled.labels, self.train.val_fraction, self.train.seed)
        self.train_human_, self.val_ = labeled.subset(tr), labeled.subset(va)
        n, n_cls = len(pool), len(labeled.classes)
        self.policy_ = create_policy(self.loop.policy, threshold=self.loop.threshold, n_classes=n_cls,
                                     n_unlabeled=n, warmup=self.loop.flex_warmup, floor=self.loop.flex_floor)
        self.pseudo_labels_ = np.full(n, UNLABELED, np.int64)
        self.confidence_ = np.zeros(n, np.float32)
        self.accepted_trial_ = np.full(n, -1, np.int64)
        self.history_, self.termination_reason_, self.n_trials_ = [], "max_trials", 0
        self.skipped_: list[tuple[str, str]] = []  # (path, reason) of files that failed to decode
        self.fingerprint_ = fingerprint(self)

    def _run_trials(self) -> None:
        """Trials after the last completed one (all of them on a fresh run) until a stop or the budget."""
        if self.history_ and self.history_[-1]["stop"]:  # a resumed run that had already stopped
            self.termination_reason_ = self.history_[-1]["stop"]
            return
        for trial in range(self.n_trials_ + 1, self.loop.n_trials + 1):
            record = self._trial(trial)
            self.n_trials_ = trial
            self.history_.append(record)
            for cb in self.callbacks:
                cb(record, self)
            if record["stop"]:
                self.termination_reason_ = record["stop"]
                break

    @property
    def labeled_trial_(self) -> np.ndarray:
        return np.concatenate([np.zeros(len(self.labeled_), np.int64), self.accepted_trial_])

    def _fit_ood_guard(self) -> None:
        """Score the pool against the human labels in the pretrained backbone's space (in head mode
        the features the head trains on, so no extra backbone pass)."""
        n = len(self.unlabeled_)
        self.ood_score_, self.ood_refused_, self.ood_ = np.full(n, np.nan, np.float32), np.zeros(n, bool), None
        if not self.loop.ood_guard or n == 0:
            return
        t = self.train
        embed = Embedder(t.model, weights=t.weights, img_size=t.img_size, cache=self.cache, runtime=t.runtime,
                         batch_size=t.batch_size, workers=t.workers, progress=self.progress)
        ref = embed(self.labeled_)
        crash_point("extract", 0)
        main = distributed.is_main()
        self.ood_ = KnnOOD(self.loop.ood_k, self.loop.ood_tpr).fit(ref.feats[ref.ok]) if main else None
        ok = np.zeros(n, bool)
        for rows, chunk in self.unlabeled_.chunks():  # one chunk of the pool's features in memory at a time
            pool = embed(chunk)
            ok[rows] = pool.ok
            if main:
                self.ood_score_[rows[pool.ok]] = self.ood_.score(pool.feats[pool.ok])
        if main:
            self.ood_refused_ = ok & self.ood_.refuse(np.nan_to_num(self.ood_score_))
        self.ood_score_, self.ood_refused_ = distributed.broadcast((self.ood_score_, self.ood_refused_))
        if not main:
            return
        _logger.info("out-of-class guard: %d of %d pool images refused (threshold %.4f, k=%d)",
                     int(self.ood_refused_.sum()), n, self.ood_.threshold_, self.ood_.k_)

    def _fit_current(self, trial: int | None) -> FitResult:
        acc = np.flatnonzero(self.pseudo_labels_ >= 0)
        pseudo = self.unlabeled_.subset(acc).with_labels(self.pseudo_labels_[acc], self.classes_)
        train = self.train_human_.concat(pseudo)
        strong = np.r_[np.zeros(len(self.train_human_), bool), np.ones(len(acc), bool)]
        weight = np.ones(len(train), np.float32)
        if self.loop.confidence_weight:
            weight[len(self.train_human_):] = self.confidence_[acc]
        result = fit(self.train, train, self.val_, self.cache, strong=strong, sample_weight=weight,
                     progress=self.progress, on_epoch=self._epoch_hook(trial))
        self.skipped_ += result.skipped
        return result

    def _epoch_hook(self, trial: int | None) -> EpochCallback:
        def on_epoch(record: dict) -> None:
            crash_point("train", trial)
            for cb in self.epoch_callbacks:
                cb({**record, "trial": trial})

        return on_epoch

    def _trial(self, trial: int) -> dict:
        result = self._fit_current(trial)
        views = self.loop.weak_views
        pred = predict(result.model, self.unlabeled_, result.data_cfg, self.cache,
                       kind="eval" if views == 1 else "weak", n_views=views, runtime=self.train.runtime,
                       batch_size=self.train.batch_size, workers=self.train.workers, progress=self.progress,
                       tail_blocks=self.train.tail_blocks)
        self.skipped_ += pred.skipped
        test_accuracy = self._accuracy(self._test_predictions(result))
        record = self._decide(trial, result, pred) if distributed.is_main() else None
        if record is not None:
            record["test_accuracy"] = test_accuracy
        shared = distributed.broadcast((record, self.pseudo_labels_, self.confidence_, self.accepted_trial_))
        record, self.pseudo_labels_, self.confidence_, self.accepted_trial_ = shared
        return record

    def _decide(self, trial: int, result: FitResult, pred) -> dict:
        """Rank 0's part of a trial: thresholds, guards, the new labels and the trial's record."""
        probs = np.where(pred.ok[:, None], pred.probs, 0.0)
        conf, guess = probs.max(axis=1), probs.argmax(axis=1)
        self.policy_.update(probs)
        tau = self.policy_.thresholds()
        confident = pred.ok & (conf >= tau[guess])
        accept = confident & ~self.ood_refused_
        human_counts = np.bincount(self.labeled_.labels, minlength=len(self.classes_))
        accept = balance_cap(accept, guess, conf, human_counts, self.loop.balance)
        before = self.pseudo_labels_.copy()
        self._apply(trial, accept, guess, conf)
        self.trial_prediction_ = {"guess": guess, "confidence": conf, "accepted": accept,
                                  "threshold": tau[guess], "ok": pred.ok}
        record = self._record(trial, result, before, accept, tau, conf, pred.skipped)
        record["refused_ood"] = int((confident & self.ood_refused_).sum())
        return record

    def _test_predictions(self, result: FitResult) -> np.ndarray | None:
        if self.test_ is None or len(self.test_) == 0:
            return None
        return result.predict(self.test_, self.cache)

    def _accuracy(self, test_pred: np.ndarray | None) -> float | None:
        if test_pred is None:
            return None
        ok = test_pred >= 0
        return float((test_pred[ok] == self.test_.labels[ok]).mean())

    def _apply(self, trial: int, accept, guess, conf) -> None:
        if self.loop.sticky:
            new = accept & (self.pseudo_labels_ < 0)
            self.pseudo_labels_[new] = guess[new]
        else:
            self.pseudo_labels_ = np.where(accept, guess, UNLABELED)
        changed = (self.pseudo_labels_ >= 0) & (self.accepted_trial_ < 0)
        self.accepted_trial_[changed] = trial
        self.accepted_trial_[self.pseudo_labels_ < 0] = -1
        self.confidence_ = conf.astype(np.float32)

    def _record(self, trial, result, before, accept, tau, conf, skipped) -> dict:
        now = self.pseudo_labels_
        newly = int(((now >= 0) & (before < 0)).sum())
        n_acc = int((now >= 0).sum())
        if n_acc == int((~self.ood_refused_).sum()) and len(now):
            stop = "all_labeled"
        elif trial > 1 and np.array_equal(now, before):
            stop = "no_change"
        elif newly == 0:
            stop = "nothing_new"
        else:
            stop = None
        if stop in ("nothing_new", "no_change"):
            _logger.info(NOTHING_MORE)
        return {"trial": trial, "accepted": n_acc, "newly_accepted": newly,
                "dropped": int(((before >= 0) & (now < 0)).sum()),
                "coverage": n_acc / max(len(now), 1), "mean_confidence": float(conf[now >= 0].mean()) if n_acc else 0.0,
                "thresholds": {c: float(t) for c, t in zip(self.classes_, tau)},
                "val_accuracy": result.best.get("val_accuracy"), "val_macro_f1": result.best.get("val_macro_f1"),
                "train_size": len(self.train_human_) + int((before >= 0).sum()),
                "skipped": len(skipped), "stop": stop}
