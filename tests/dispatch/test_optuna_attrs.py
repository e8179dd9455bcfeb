"""Optuna's copy of a study carries our trial ids and the per-task scores, on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from searchsvc.dispatch.optuna_attrs import TrialAnnotator
from searchsvc.dispatch.optuna_storage import make_optuna_storage
from searchsvc.dispatch.searchers import make_searcher
from searchsvc.dispatch.space import tune_space
from searchsvc.spec import parse_spec
from searchsvc.store import Store


def test_finished_optuna_trials_carry_our_ids_and_task_scores(store: Store, database_url: str, minimal_spec: dict[str, Any],
                                                              tmp_path: Path) -> None:
    spec = parse_spec({**minimal_spec, "search": {"algorithm": "tpe", "num_trials": 3, "max_concurrent": 3, "seed": 0,
                                                  "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}}}})
    user = store.get_or_create_user("alice")
    study = store.create_study(user.id, spec)
    name = f"searchsvc-study-{study.id}"
    searcher = make_searcher(spec.search, storage=make_optuna_storage(database_url), study_name=name,
                             annotate=TrialAnnotator(store, study.id))
    assert searcher.set_search_properties("avg_dev_score", "max", tune_space(spec.search))
    ours = {}
    for i in range(3):
        config = searcher.suggest(f"ray-{i}")
        ours[i] = store.start_trial(study.id, ray_trial_id=f"ray-{i}", config=config)
        for epoch in (1, 2):
            result = {"avg_dev_score": 0.5 + 0.1 * i + 0.01 * epoch, "senti/score": 0.4 + 0.1 * i + 0.01 * epoch,
                      "pairs/score": 0.6 + 0.1 * i + 0.01 * epoch, "senti/accuracy": 0.9, "epoch": epoch,
                      "training_iteration": epoch, "nas/architecture": [{"weights": {}}]}
            searcher.on_trial_result(f"ray-{i}", result)
        searcher.on_trial_complete(f"ray-{i}", result)

    trials = optuna.load_study(study_name=name, storage=make_optuna_storage(database_url)).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    for i, trial in enumerate(trials):
        assert trial.value == 0.5 + 0.1 * i + 0.02
        assert trial.user_attrs == {
            "searchsvc_study_id": study.id, "searchsvc_trial_id": ours[i].id, "searchsvc_trial_number": ours[i].number,
            "avg_dev_score": 0.5 + 0.1 * i + 0.02, "senti/score": 0.4 + 0.1 * i + 0.02, "pairs/score": 0.6 + 0.1 * i + 0.02,
            "epoch": 2,
        }


def test_a_trial_unknown_to_sql_is_still_scored(store: Store, minimal_spec: dict[str, Any]) -> None:
    study = store.create_study(store.get_or_create_user("bob").id, parse_spec(minimal_spec))
    annotate = TrialAnnotator(store, study.id)
    assert annotate("ray-x", {"sst2/score": 0.5, "epoch": 3.0, "x": float("nan"), "y/score": float("inf")}) == \
        {"searchsvc_study_id": study.id, "sst2/score": 0.5, "epoch": 3}
