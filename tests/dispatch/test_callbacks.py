"""What reaches SQL from a Tune result: our metrics, JSON-safe, without Tune's bookkeeping,
written together with the result's checkpoint."""

from __future__ import annotations

import json
import math

from types import SimpleNamespace

import numpy as np

from searchsvc.dispatch.callbacks import StoreCallback, _clean_metrics
from searchsvc.spec import parse_spec
from searchsvc.store import Store


def test_metrics_are_json_safe_at_every_depth() -> None:
    result = {
        "avg_dev_score": 0.5, "bad": math.nan, "epoch": np.int64(3), "training_iteration": 3, "done": False,
        "nas/architecture": [{"entropy": math.inf, "weights": {"relu-d0.1": np.float32(0.25)}}], "pid": 42,
    }
    metrics = _clean_metrics(result)
    assert metrics["bad"] is None and metrics["epoch"] == 3 and metrics["worker_pid"] == 42
    assert metrics["nas/architecture"][0]["entropy"] is None
    assert metrics["nas/architecture"][0]["weights"]["relu-d0.1"] == 0.25
    assert "training_iteration" not in metrics and "done" not in metrics
    json.dumps(metrics, allow_nan=False)  # what PostgreSQL's JSON accepts


class _RayTrial:
    """What the callback reads of Ray's Trial (Ray's own class needs a running controller)."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id, self.config, self.error_file = trial_id, {"lr": 0.01}, None


def _result(epoch: int, score: float) -> dict:
    return {"epoch": epoch, "avg_dev_score": score, "training_iteration": epoch, "should_checkpoint": True, "pid": 1}


def test_a_result_reaches_sql_with_its_checkpoint_and_a_lost_one_is_redone(store: Store, minimal_spec: dict) -> None:
    """Tune hands a result to callbacks before it fetches the result's checkpoint from the
    worker; a worker dying in between loses the checkpoint, and the retry redoes that epoch."""
    owner, _ = store.issue_token("alice")
    study = store.create_study(owner.id, parse_spec(minimal_spec))
    callback = StoreCallback(store, study.id, metric="avg_dev_score", mode="max")
    trial = _RayTrial("ray-0")
    callback.on_trial_start(0, [], trial)
    (ours,) = store.list_trials(study.id)

    def epochs() -> list[tuple[int, int, str | None]]:
        return [(r.attempt, r.epoch, r.checkpoint_path) for r in store.list_reports(study.id, ours.id)]

    callback.on_trial_result(0, [], trial, _result(1, 0.5))
    assert epochs() == []  # not before its checkpoint
    callback.on_checkpoint(0, [], trial, SimpleNamespace(path="/ckpt/e1"))
    assert epochs() == [(1, 1, "/ckpt/e1")]

    callback.on_trial_result(0, [], trial, _result(2, 0.6))  # then the worker dies
    callback.on_trial_recover(0, [], trial)
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, _result(2, 0.6))  # the retry, resumed from epoch 1
    callback.on_checkpoint(0, [], trial, SimpleNamespace(path="/ckpt/e2"))
    # every epoch once across attempts (e1's path is forgotten: Ray keeps the latest and the best, e2)
    assert epochs() == [(1, 1, None), (2, 2, "/ckpt/e2")]

    # A result without a checkpoint is written at once; one whose checkpoint never came
    # is kept when the trial ends (no retry will redo it).
    callback.on_trial_result(0, [], trial, {**_result(3, 0.7), "should_checkpoint": False})
    callback.on_trial_result(0, [], trial, _result(4, 0.8))
    callback.on_trial_result(0, [], trial, _result(5, 0.85))  # never overwrites the one still waiting
    callback.on_checkpoint(0, [], trial, SimpleNamespace(path="/ckpt/e5"))
    callback.on_trial_result(0, [], trial, _result(6, 0.9))
    callback.on_trial_complete(0, [], trial)
    assert epochs()[2:] == [(2, 3, None), (2, 4, None), (2, 5, "/ckpt/e5"), (2, 6, None)]
    assert store.get_trial(study.id, ours.id).state == "completed"
