"""What reaches SQL from a Tune result: our metrics, JSON-safe, without Tune's bookkeeping."""

from __future__ import annotations

import json
import math

import numpy as np

from searchsvc.dispatch.callbacks import _clean_metrics


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
