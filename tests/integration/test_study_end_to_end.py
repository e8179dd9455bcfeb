"""A 4-trial study through the real API, a real Ray and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.integration.conftest import LiveService, dump_on_failure, study_spec
from tests.utils.ray_cluster import RAY_ENV

pytestmark = pytest.mark.integration


def _ray_names(dashboard_url: str, *, prefix: str) -> dict[str, list[str]]:
    """The names starting with ``prefix`` of the actors (their repr) and tasks in Ray's state
    API, asked from a process of its own: the service's Ray requires a token, which a
    client reads only with ``RAY_AUTH_MODE=token`` set when it starts."""
    program = (
        "import json, sys; from ray.util.state import list_actors, list_tasks; url, prefix = sys.argv[1:];"
        "actors = list_actors(address=url, detail=True, limit=10_000, raise_on_missing_output=False);"
        "tasks = list_tasks(address=url, filters=[('name', '=', prefix + 'export')], raise_on_missing_output=False);"
        "print(json.dumps({'actors': [a.repr_name for a in actors if (a.repr_name or '').startswith(prefix)],"
        " 'tasks': [t.name for t in tasks]}))"
    )
    out = subprocess.run([sys.executable, "-c", program, dashboard_url, prefix], capture_output=True, text=True,
                         env={**os.environ, **RAY_ENV}, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_four_trial_study_runs_end_to_end(live: LiveService, tmp_path) -> None:
    study = live.client.create_study(study_spec(live))
    assert study.state == "pending"
    study.wait(timeout=900, poll_s=0.5)
    assert study.state == "completed", dump_on_failure(live)

    # The API's view
    trials = study.trials()
    assert len(trials) == 4
    assert all(t["state"] == "completed" for t in trials), trials
    assert len({json.dumps(t["config"], sort_keys=True) for t in trials}) == 4  # TPE proposed 4 configs
    assert study.dashboard_url and study.data["ray_experiment"] == f"searchsvc-study-{study.id}"

    # SQL is the system of record: one report per epoch per trial, read straight from the store
    persisted = []
    for trial in live.store.list_trials(study.id):
        reports = live.store.list_reports(study.id, trial.id)
        assert [r.epoch for r in reports] == [1, 2], (trial, reports)
        for r in reports:
            # the objective: the study's metric (avg_dev_score, max) on rows held out from training
            assert r.objective == r.metrics["objective"] == r.metrics["val/avg_dev_score"]
            assert {"senti/score", "senti/accuracy", "pairs/score", "pairs/f1", "pairs/accuracy", "train_loss"} <= set(r.metrics)
            assert r.objective == pytest.approx((r.metrics["val/senti/score"] + r.metrics["val/pairs/score"]) / 2)
            persisted.append((r.objective, trial.id, r.epoch))
        # API reports equal the stored ones
        api_reports = study.reports(trial.id)
        assert [(r["epoch"], r["objective"]) for r in api_reports] == [(r.epoch, r.objective) for r in reports]

    best = study.best()
    top_objective = max(p[0] for p in persisted)
    assert best["objective"] == top_objective
    assert (best["objective"], best["trial"]["id"], best["report"]["epoch"]) in persisted
    assert best["report"]["checkpoint_path"], "the best epoch must have a checkpoint"
    assert study.progress["best_objective"] == top_objective

    # The artifact: the best trial exported as one directory (merged model, prefix, heads, PEFT adapter)
    assert study.data["error"] is None, study.data["error"]
    path = study.download_artifact(tmp_path)
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "artifact", filter="data")
    assert f"study-{study.id}-artifact/searchsvc_artifact.json" in names, sorted(names)[:20]
    assert f"study-{study.id}-artifact/adapter/adapter_config.json" in names
    from workers import load

    predictor = load(tmp_path / "artifact" / f"study-{study.id}-artifact")
    rows = [json.loads(line) for line in open(live.tasks[0]["path"] + "/dev.jsonl")][:5]
    assert len(predictor.predict("senti", rows)) == 5

    # Ray's dashboard names each trial's actor after the study and our trial number, and the export task
    names = _ray_names(study.dashboard_url, prefix=f"study-{study.id}/")
    assert set(names["actors"]) == {f"study-{study.id}/trial-{t['number']}" for t in trials}, names
    assert names["tasks"] == [f"study-{study.id}/export"], names


def test_a_study_on_train_loss_min_picks_the_lowest(live: LiveService) -> None:
    """search.metric/mode reach the trainer, Tune and the store: the lowest training loss wins."""
    spec = study_spec(live, name="loss-min", search={"num_trials": 2, "metric": "train_loss", "mode": "min"},
                      train={"max_epochs": 3, "patience": 1, "batch_size": 8, "max_seq_len": 16, "seed": 0})
    study = live.client.create_study(spec)
    study.wait(timeout=900, poll_s=0.5)
    assert study.state == "completed", dump_on_failure(live)
    every = []
    for trial in live.store.list_trials(study.id):
        reports = live.store.list_reports(study.id, trial.id)
        losses = [r.metrics["train_loss"] for r in reports]
        assert [r.objective for r in reports] == losses
        # patience 1 in mode min: a trial stops after the first epoch that is not a new minimum
        for i in range(1, len(losses) - 1):
            assert losses[i] < min(losses[:i]), losses
        assert trial.best_objective == min(losses)
        every += [(r.objective, trial.id, r.epoch) for r in reports]
    best = study.best()
    assert (best["objective"], best["trial"]["id"], best["report"]["epoch"]) == min(every)
    assert study.progress["best_objective"] == min(every)[0]


def test_stop_keeps_finished_epochs(live: LiveService) -> None:
    spec = study_spec(live, name="to-stop", search={"num_trials": 50, "max_concurrent": 1},
                      train={"max_epochs": 200, "patience": 200, "batch_size": 8, "max_seq_len": 16, "seed": 0})
    study = live.client.create_study(spec)
    import time

    deadline = time.monotonic() + 300
    seen: list = []
    while time.monotonic() < deadline:
        trials = study.trials()
        if trials and trials[0]["num_reports"] >= 2:
            seen = study.reports(trials[0]["id"])
            break
        time.sleep(0.5)
    assert seen, dump_on_failure(live)
    study.stop()
    study.wait(timeout=300, poll_s=0.5)
    assert study.state == "stopped", dump_on_failure(live)
    trials = study.trials()
    assert all(t["state"] in ("stopped", "completed") for t in trials)
    assert len(trials) < 50
    kept = study.reports(trials[0]["id"])
    assert [r["epoch"] for r in kept[: len(seen)]] == [r["epoch"] for r in seen]
    assert [r["objective"] for r in kept[: len(seen)]] == [r["objective"] for r in seen]
    assert len(kept) >= len(seen)
    # the stored study says stopped too, and a second stop is refused
    assert live.store.get_study(study.id).state == "stopped"


def test_a_peml_study_runs_end_to_end(live: LiveService, tmp_path) -> None:
    """PrefixNAS + LoRA with gradient coordination, its hyperparameters searched by TPE."""
    spec = study_spec(live, name="peml", method="peml", search={
        "num_trials": 2, "max_concurrent": 2, "seed": 1,
        "space": {
            "lr": {"type": "loguniform", "low": 1e-3, "high": 5e-2},
            "entropy_lambda": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            "grad_alpha": {"type": "uniform", "low": 0.0, "high": 5.0},
            "nas_cells": {"type": "int", "low": 1, "high": 3},
            "weight_senti": {"type": "uniform", "low": 0.5, "high": 2.0},
        }})
    spec["coordination"] = {"enabled": True, "every_k": 2}
    study = live.client.create_study(spec)
    study.wait(timeout=900, poll_s=0.5)
    assert study.state == "completed", dump_on_failure(live)
    assert study.data["error"] is None, study.data["error"]
    trials = study.trials()
    assert len(trials) == 2 and all(t["state"] == "completed" for t in trials)
    for trial in trials:
        reports = study.reports(trial["id"])
        assert [r["epoch"] for r in reports] == [1, 2]
        for report in reports:
            m = report["metrics"]
            assert len(m["nas/architecture"]) == trial["config"]["nas_cells"]
            assert all(cell["chosen"] in cell["weights"] for cell in m["nas/architecture"])
            assert m["discretization_gap"] == pytest.approx(m["relaxed_avg_dev_score"] - m["avg_dev_score"])
            assert "grad_conflict" in m and "grad_conflict_after" in m
            assert m["task_weight/senti"] + m["task_weight/pairs"] == pytest.approx(1.0)
    path = study.download_artifact(tmp_path)
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "artifact", filter="data")
    from workers import load

    predictor = load(tmp_path / "artifact" / f"study-{study.id}-artifact")
    rows = [json.loads(line) for line in open(live.tasks[1]["path"] + "/dev.jsonl")][:4]
    assert len(predictor.predict("pairs", rows)) == 4
