"""Waiting on studies and reading them back, for the fault-tolerance tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from searchsvc.client import Study
from searchsvc.dispatch.optuna_storage import optuna_storage_url
from searchsvc.dispatch.study_runner import experiment_name


def wait_for(condition: Callable[[], Any], *, timeout_s: float = 300, poll_s: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def reports_by_trial(study: Study) -> dict[int, list[dict]]:
    """Each trial's reports without their checkpoint paths: Ray's retention deletes older
    checkpoints later (and the store forgets their paths), which is not a change of content."""
    return {t["id"]: [{k: v for k, v in r.items() if k != "checkpoint_path"} for r in study.reports(t["id"])]
            for t in study.trials()}


def assert_each_epoch_once(reports: dict[int, list[dict]]) -> None:
    for trial_id, rows in reports.items():
        epochs = [r["epoch"] for r in rows]
        assert epochs == list(range(1, len(epochs) + 1)), (trial_id, epochs)


def optuna_history(url: str, study_id: int) -> list[tuple[str, float | None]]:
    """``(state, value)`` of every trial in the study's Optuna storage (read while the
    database still exists: a PostgreSQL test database is dropped after)."""
    import optuna

    storage_url, engine_kwargs = optuna_storage_url(url)
    storage = optuna.storages.RDBStorage(storage_url, engine_kwargs=engine_kwargs)
    try:
        study = optuna.load_study(study_name=experiment_name(study_id), storage=storage)
        return [(t.state.name, t.value) for t in study.get_trials(deepcopy=False)]
    finally:
        storage.engine.dispose()
