"""After a restore, SQL wins over Tune's saved state: finished trials stay finished.

Why this is needed. Our callback writes SQL as events happen; Tune saves its experiment
state (trial list, searcher) every few seconds and after each checkpoint. A control plane
killed between the two leaves SQL ahead of Tune's saved state:

- a trial SQL holds as finished (completed, stopped early by patience or ASHA, failed for
  good) is still running in Tune's state, so ``Tuner.restore`` would start it again: a
  completed trial runs a second time, a trial stopped early trains epochs it was never
  meant to, and its row is rewritten;
- a trial started just before the crash has a SQL row (and an Optuna trial) that Tune's
  saved state does not know at all, so it is never continued; Tune runs another in its place.

Why a scheduler hook. Tune rebuilds its trial list inside ``TuneController.resume()``.
The first code of ours that sees that list, with the power to act on it and before any
trial is started, is the scheduler's ``choose_trial_to_run``, which the controller calls
at the start of every step, ahead of starting pending trials. ``stop_trial`` is the
controller's own way for a scheduler to end a trial: it tells the searcher (freeing the
trial's concurrency slot), the scheduler and the callbacks, and marks the trial
terminated, so the ending trial is never started and Tune's next saved state agrees with SQL.
Rejected alternatives: rewriting Tune's experiment-state JSON before restoring (an
internal format, and the searcher's pickled state would still count the trial as live,
holding a concurrency slot for ever); a trial function that asks SQL and returns at once
(every worker node would need the database, an actor starts for nothing, and Tune would
hand the searcher the stale last result of its saved state).

The searcher is told the trial's final value from SQL (its last report, as Tune tells it
on completion). For the Optuna searchers that value normally reached Optuna's storage
before SQL heard of the end (Tune calls the searcher first), and Optuna keeps the first
value it was told; for Hyperopt, whose history lives only in Tune's saved state, this is
what puts the trial's result back into it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial as TuneTrial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from searchsvc.dispatch.searchers import fail_forgotten_optuna_trials
from searchsvc.store import Store
from searchsvc.store.types import UNFINISHED_TRIAL_STATES

log = logging.getLogger("searchsvc.reconcile")


class Reconciler:
    """Settles a restored experiment against SQL, once per runner process."""

    def __init__(self, store: Store, study_id: int, *, metric: str) -> None:
        self.store = store
        self.study_id = study_id
        self.metric = metric
        self._done = False

    # Pickled with the scheduler into Tune's tuner state: a restored runner reconciles anew.
    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store, "study_id": self.study_id, "metric": self.metric}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._done = False

    def reconcile_once(self, controller: Any) -> None:
        """On the first call: end the trials SQL holds as finished, and settle the ones
        Tune does not know. ``controller`` is what Tune hands a scheduler."""
        if self._done:
            return
        self._done = True
        trials: list[TuneTrial] = list(controller.get_trials())
        rows = {row.ray_trial_id: row for row in self.store.list_trials(self.study_id)}
        for trial in trials:
            row = rows.get(trial.trial_id)
            if row is None or row.state in UNFINISHED_TRIAL_STATES or trial.status not in (TuneTrial.PENDING, TuneTrial.PAUSED):
                continue
            log.info("study %s: trial %s (Ray %s) is %s in SQL; not running it again", self.study_id, row.id,
                     trial.trial_id, row.state)
            result = self._final_result(row.id)
            controller.search_alg.on_trial_complete(trial.trial_id, result=result, error=result is None and row.state == "failed")
            controller.stop_trial(trial)  # the searcher already heard; the callbacks leave the finished row as it is
        for trial in trials:
            row = rows.get(trial.trial_id)
            if trial.status in (TuneTrial.PENDING, TuneTrial.PAUSED) and (row is None or row.state in UNFINISHED_TRIAL_STATES):
                reported = [r.epoch for r in self.store.list_reports(self.study_id, row.id)] if row is not None else []
                repoint_missing_checkpoint(trial, study_id=self.study_id, last_reported_epoch=max(reported, default=0))
        for lost in self.store.forget_unknown_trials(self.study_id, known_ray_ids={t.trial_id for t in trials}):
            log.warning("study %s: trial %s (Ray %s) started just before the crash and is unknown to Tune's saved "
                        "state; %s", self.study_id, lost.id, lost.ray_trial_id,
                        "kept as failed with its reports" if lost.num_reports else "its row is removed")
        forgotten = fail_forgotten_optuna_trials(controller.search_alg)
        if forgotten:
            log.warning("study %s: Optuna trials %s were asked for but never reached Tune's saved state; marked failed",
                        self.study_id, forgotten)

    def _final_result(self, trial_id: int) -> dict[str, Any] | None:
        reports = self.store.list_reports(self.study_id, trial_id)
        if not reports or reports[-1].objective is None:
            return None
        last = reports[-1]
        return {**last.metrics, self.metric: last.objective}


def repoint_missing_checkpoint(trial: TuneTrial, *, study_id: int, last_reported_epoch: int) -> None:
    """Point a restored trial at a checkpoint that exists, when the one Tune saved is gone.

    Ray's retention (``num_to_keep``) deletes a trial's previous checkpoint as soon as the
    next one registers; Tune saves its experiment state a moment later. A control plane
    killed in between restores a trial whose recorded checkpoint no longer exists, and
    Ray's ``Trainable.restore`` then fails on the worker before any code of ours runs:
    every retry fails the same way and the trial ends failed. Here, before the trial
    starts, its record is pointed at the newest complete checkpoint beside the missing one
    whose epoch SQL holds a report for (``last_reported_epoch``: a newer checkpoint whose
    report never arrived would skip that report for good), or cleared when none survives
    (the trial starts afresh). Epochs trained again are reported again; SQL keeps each
    epoch's first report. Local storage only: on remote storage
    the trainable's own fallback (:func:`~searchsvc.dispatch.trainable.resume_source`) is
    all there is."""
    import pyarrow.fs
    from ray.tune import Checkpoint

    from workers import resumable_beside

    result = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
    if result is None or result.checkpoint is None or not isinstance(result.checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return
    recorded = Path(result.checkpoint.path)
    if recorded.is_dir():
        return
    found = resumable_beside(recorded, max_epoch=last_reported_epoch)
    if found is None:
        log.warning("study %s: Ray trial %s: checkpoint %s is gone and none survives beside it; it starts afresh",
                    study_id, trial.trial_id, recorded)
        trial.run_metadata.checkpoint_manager._latest_checkpoint_result = None  # Ray has no setter
        trial._restore_checkpoint_result = None
    else:
        log.warning("study %s: Ray trial %s: checkpoint %s is gone; it continues from %s", study_id, trial.trial_id,
                    recorded, found)
        result.checkpoint = Checkpoint(path=str(found), filesystem=result.checkpoint.filesystem)
    trial.invalidate_json_state()


class _ReconcileFirst:
    """Scheduler mixin: reconcile with SQL before choosing the first trial to run."""

    reconciler: Reconciler | None = None

    def choose_trial_to_run(self, tune_controller: Any) -> TuneTrial | None:
        if self.reconciler is not None:
            self.reconciler.reconcile_once(tune_controller)
        return super().choose_trial_to_run(tune_controller)  # type: ignore[misc]


class ReconcilingFIFOScheduler(_ReconcileFirst, FIFOScheduler):
    """Tune's FIFO scheduler, reconciled with SQL after a restore."""


class ReconcilingASHAScheduler(_ReconcileFirst, ASHAScheduler):
    """Tune's ASHA scheduler, reconciled with SQL after a restore."""
