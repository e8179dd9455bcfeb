"""ASHA with TPE (in the spirit of BOHB): many trials, the weak ones stopped at a rung, and
TPE told the value every trial reached, stopped or not.

A real Ray Tune run, built by the same functions the study runner uses (searcher, space,
scheduler), of a tiny function trainable whose score we know in advance: no model, no
mocks. The method is a dimension too, so the define-by-run space runs under Tune.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ray.tune.search.optuna import OptunaSearch

from searchsvc.dispatch.optuna_storage import make_optuna_storage
from searchsvc.dispatch.searchers import make_searcher
from searchsvc.dispatch.space import param_space
from searchsvc.dispatch.study_runner import _scheduler
from searchsvc.store import Store
from searchsvc.spec import parse_spec

EPOCHS = 4
TRIALS = 10


def _score(config: dict[str, Any], epoch: int) -> float:
    """Rises with epochs; lora beats prefix, and an lr near 1e-2 beats one far from it."""
    base = (0.6 if config["method"] == "lora" else 0.3) - abs(math.log10(config["lr"]) + 2) / 10
    return round(base * epoch / EPOCHS, 6)


def _fake_trial(config: dict[str, Any]) -> None:
    from ray import tune

    for epoch in range(1, EPOCHS + 1):
        tune.report({"objective": _score(config, epoch), "avg_dev_score": _score(config, epoch), "epoch": epoch})


def test_a_spec_combines_asha_with_tpe(minimal_spec: dict, tmp_path: Path) -> None:
    """The spec-level half: tpe + asha parse, and the runner builds ASHA on epochs, its
    grace period capped at max_epochs, beside a TPE searcher."""
    from ray.tune.schedulers import ASHAScheduler

    spec = parse_spec({**minimal_spec, "train": {"max_epochs": 3}, "search": {
        "algorithm": "tpe", "scheduler": "asha", "grace_period": 5, "reduction_factor": 3,
        "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}})
    store = Store.open(f"sqlite:///{tmp_path / 'searchsvc.db'}")
    study = store.create_study(store.get_or_create_user("u").id, spec)
    scheduler = _scheduler(store, study.id, spec)
    assert isinstance(scheduler, ASHAScheduler)
    assert (scheduler._time_attr, scheduler._max_t, scheduler._reduction_factor) == ("training_iteration", 3, 3)
    assert isinstance(make_searcher(spec.search).searcher, OptunaSearch)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_asha_stops_weak_trials_and_tpe_learns_every_trials_value(local_ray: None, minimal_spec: dict, tmp_path: Path) -> None:
    import optuna
    from ray import tune

    spec = parse_spec({**minimal_spec, "train": {"max_epochs": EPOCHS, "patience": EPOCHS}, "search": {
        "algorithm": "tpe", "scheduler": "asha", "grace_period": 1, "reduction_factor": 2,
        "num_trials": TRIALS, "max_concurrent": 2, "seed": 0,
        "space": {"method": {"type": "choice", "values": ["lora", "prefix"]},
                  "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
                  "lora_rank": {"type": "choice", "values": [2, 4]},
                  "prefix_length": {"type": "int", "low": 2, "high": 8}}}})
    search = spec.search
    storage_url = f"sqlite:///{tmp_path / 'searchsvc.db'}"  # Optuna's history goes beside it, in SQL
    store = Store.open(storage_url)
    study = store.create_study(store.get_or_create_user("u").id, spec)
    tuner = tune.Tuner(
        tune.with_resources(_fake_trial, {"cpu": 1}),
        param_space=param_space(search),
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(search, storage=make_optuna_storage(storage_url), study_name="asha-tpe"),
            scheduler=_scheduler(store, study.id, spec), num_samples=TRIALS, metric="objective", mode=search.mode),
        run_config=tune.RunConfig(name="asha-tpe", storage_path=str(tmp_path / "ray"), verbose=0),
    )
    results = [r for r in tuner.fit() if r.error is None]
    assert len(results) == TRIALS

    epochs = sorted(int(r.metrics["training_iteration"]) for r in results)
    assert epochs[0] < EPOCHS, epochs   # ASHA cut some trials at a rung
    assert epochs[-1] == EPOCHS, epochs  # and let the best run to the end
    for result in results:
        config = result.config
        assert set(config) == {"method", "lr", "lora_rank" if config["method"] == "lora" else "prefix_length"}
        assert result.metrics["avg_dev_score"] == _score(config, int(result.metrics["training_iteration"]))

    # TPE (its history in SQL) holds every trial as complete, with the value the trial
    # reached: the stopped ones (epochs[0] < EPOCHS above) with their value at the rung
    # where ASHA cut them, not as failed or pruned, which TPE would leave out of its model.
    history = optuna.load_study(study_name="asha-tpe", storage=make_optuna_storage(storage_url)).get_trials()
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in history)
    told = sorted((t.params["method"], t.params["lr"], t.value) for t in history)
    reached = sorted((r.config["method"], r.config["lr"], r.metrics["avg_dev_score"]) for r in results)
    assert told == reached

    # A restored experiment (a paused study, a restarted control plane) unpickles the
    # searcher with its define-by-run space and SQL storage, and finds nothing left to run.
    assert list((tmp_path / "ray" / "asha-tpe").glob("searcher-state-*.pkl"))  # what the restore unpickles
    restored = tune.Tuner.restore(str(tmp_path / "ray" / "asha-tpe"), trainable=tune.with_resources(_fake_trial, {"cpu": 1}))
    assert sorted(r.metrics["avg_dev_score"] for r in restored.fit()) == sorted(x[2] for x in reached)
