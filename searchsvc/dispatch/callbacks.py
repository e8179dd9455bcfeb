"""Tune callback and stopper that connect a running Tune experiment to the SQL store.

This module is the one place that maps Ray's trial ids to ours.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from ray import tune

from searchsvc.store import Store

# Keys Tune adds to every result; they are bookkeeping, not the trial's metrics.
_TUNE_KEYS = frozenset(
    {
        "done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s", "pid",
        "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name",
        "should_checkpoint",
    }
)


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity (PostgreSQL refuses them): a missing number is honest."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


def _clean_metrics(result: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for key, value in result.items():
        if key in _TUNE_KEYS or key.startswith("experiment_") or key.startswith("episode_"):
            continue
        metrics[key] = _json_safe(value)
    metrics["node_ip"] = result.get("node_ip")
    metrics["worker_pid"] = result.get("pid")
    return metrics


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        return Path(path).read_text(encoding="utf-8", errors="replace")[-20_000:]
    return "trial failed (no error file from Ray)"


class StoreCallback(tune.Callback):
    """Writes trial starts, per-epoch reports, checkpoints and ends to the store as they happen.

    A result that comes with a checkpoint reaches SQL only once Tune has registered that
    checkpoint, together with it, in one transaction. Tune handles a function trainable's
    result first and fetches its checkpoint in a second call to the worker; a worker that
    dies in between takes the checkpoint with it, and its retry resumes from the one
    before. Writing the result at once would leave SQL with an epoch the retry then runs
    again: the same epoch twice across attempts, the first with no checkpoint behind it.
    """

    def __init__(self, store: Store, study_id: int, *, metric: str, mode: str) -> None:
        self.store = store
        self.study_id = study_id
        self.metric = metric
        self.mode = mode
        self._ids: dict[str, int] = {}  # Ray trial id -> our trial id
        self._waiting: dict[str, dict[str, Any]] = {}  # Ray trial id -> a report waiting for its checkpoint

    def _trial_id(self, trial: Any) -> int:
        if trial.trial_id not in self._ids:
            self._ids[trial.trial_id] = self.store.trial_by_ray_id(self.study_id, trial.trial_id).id
        return self._ids[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self.store.start_trial(self.study_id, ray_trial_id=trial.trial_id, config=dict(trial.config))
        self._ids[trial.trial_id] = row.id
        self._waiting.pop(trial.trial_id, None)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        metrics = _clean_metrics(result)
        objective = metrics.get(self.metric)
        report = {
            "epoch": int(metrics.get("epoch") or result.get("training_iteration") or 0),
            "objective": float(objective) if isinstance(objective, (int, float)) else None,
            "metrics": metrics,
        }
        if result.get("should_checkpoint"):
            self._write_waiting(trial)  # Tune never skips a save, but no result is ever overwritten unwritten
            self._waiting[trial.trial_id] = report  # written by on_checkpoint, with its checkpoint
        else:
            self.store.add_report(self._trial_id(trial), **report, mode=self.mode)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        report = self._waiting.pop(trial.trial_id, None)
        if report is None:
            self.store.attach_checkpoint(self._trial_id(trial), path=str(checkpoint.path))
        else:
            self.store.add_report(self._trial_id(trial), **report, mode=self.mode, checkpoint_path=str(checkpoint.path))

    def _write_waiting(self, trial: Any) -> None:
        """Write a result whose checkpoint never came, without one: the trial ended (no
        retry will redo that epoch) or moved on past it."""
        report = self._waiting.pop(trial.trial_id, None)
        if report is not None:
            self.store.add_report(self._trial_id(trial), **report, mode=self.mode)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write_waiting(trial)
        # Tune marks a trial ended by our stopper as done too, so the stop flag decides.
        stopped = self.store.is_stop_requested(self.study_id)
        self.store.finish_trial(self._trial_id(trial), "stopped" if stopped else "completed")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """The trial's worker failed and Tune will run it again (from its last checkpoint)."""
        self._waiting.pop(trial.trial_id, None)  # its checkpoint died with the worker: the retry redoes the epoch
        self.store.retry_trial(self._trial_id(trial), error=_error_text(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write_waiting(trial)
        self.store.finish_trial(self._trial_id(trial), "failed", error=_error_text(trial))

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into Tune's experiment state; the caches are rebuilt after a restore.
        return {**self.__dict__, "_ids": {}, "_waiting": {}}


class StopWhenRequested(tune.Stopper):
    """Acts on what users ask of a running study (polled from SQL, at most once a second).

    Stop: ends the whole experiment; unfinished trials end as stopped.
    Pause: interrupts Tune the way Ctrl-C does, so Tune saves the experiment with its
    unfinished trials resumable; the runner then records the study as paused.
    """

    def __init__(self, store: Store, study_id: int, *, poll_s: float = 1.0) -> None:
        self.store = store
        self.study_id = study_id
        self.poll_s = poll_s
        self._reset()

    def _reset(self) -> None:
        self._checked_at = 0.0
        self._stop = False
        self._interrupted = False

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store, "study_id": self.study_id, "poll_s": self.poll_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._checked_at >= self.poll_s:
            self._checked_at = now
            stop, control = self.store.study_control(self.study_id)
            self._stop = stop
            if control == "pause" and not stop and not self._interrupted:
                self._interrupted = True
                os.kill(os.getpid(), signal.SIGINT)  # Tune's own graceful interrupt: state saved, trials resumable
        return self._stop
