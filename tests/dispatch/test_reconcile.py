"""After a restore SQL wins: what the reconciler asks of Tune and writes to SQL, trial by trial.

Tune's controller is stood in for by the few calls a scheduler may make on it
(``get_trials``, ``search_alg``, ``stop_trial``); the store and Optuna are real.
The end-to-end proof, with a real kill -9, is in tests/integration/test_restore_finished.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import optuna
from ray.tune.experiment import Trial as TuneTrial

from searchsvc.dispatch.reconcile import Reconciler
from searchsvc.dispatch.searchers import fail_forgotten_optuna_trials
from searchsvc.spec import parse_spec
from searchsvc.store import Store


class _Controller:
    """What Tune hands a scheduler, recording what the reconciler asks of it."""

    def __init__(self, trials: list[Any]) -> None:
        self.trials = trials
        self.told: list[tuple[str, dict | None, bool]] = []
        self.stopped: list[str] = []
        self.search_alg = SimpleNamespace(on_trial_complete=lambda trial_id, result=None, error=False:
                                          self.told.append((trial_id, result, error)))

    def get_trials(self) -> list[Any]:
        return self.trials

    def stop_trial(self, trial: Any) -> None:
        self.stopped.append(trial.trial_id)
        trial.status = TuneTrial.TERMINATED


def _trial(trial_id: str, status: str) -> SimpleNamespace:
    """A restored Tune trial as the reconciler sees it: id, status, and no checkpoint yet."""
    no_checkpoint = SimpleNamespace(checkpoint_manager=SimpleNamespace(latest_checkpoint_result=None))
    return SimpleNamespace(trial_id=trial_id, status=status, run_metadata=no_checkpoint)


def test_finished_trials_end_without_running_and_unknown_ones_are_settled(store: Store, minimal_spec: dict) -> None:
    owner, _ = store.issue_token("alice")
    study = store.create_study(owner.id, parse_spec(minimal_spec))
    done = store.start_trial(study.id, ray_trial_id="done", config={})
    store.add_report(done.id, epoch=1, objective=0.4, metrics={"avg_dev_score": 0.4})
    store.add_report(done.id, epoch=2, objective=0.3, metrics={"avg_dev_score": 0.3})
    done = store.finish_trial(done.id, "completed")
    failed = store.finish_trial(store.start_trial(study.id, ray_trial_id="failed", config={}).id, "failed", error="boom")
    running = store.start_trial(study.id, ray_trial_id="running", config={})
    store.start_trial(study.id, ray_trial_id="orphan", config={})  # started just before the crash; Tune never saved it
    tune = _Controller([_trial(i, s) for i, s in [
        ("done", TuneTrial.PENDING), ("failed", TuneTrial.PENDING), ("running", TuneTrial.PENDING),
        ("new", TuneTrial.PENDING)]])

    reconciler = Reconciler(store, study.id, metric="avg_dev_score")
    reconciler.reconcile_once(tune)

    assert tune.stopped == ["done", "failed"]  # never started again
    # the searcher hears the final value SQL holds (the last report, as Tune tells it on completion)
    assert tune.told == [("done", {"avg_dev_score": 0.3}, False), ("failed", None, True)]
    trials = {t.ray_trial_id: t for t in store.list_trials(study.id)}
    assert set(trials) == {"done", "failed", "running"}
    assert trials["done"] == done and trials["failed"] == failed and trials["running"] == running
    reconciler.reconcile_once(tune)  # once per runner process
    assert tune.stopped == ["done", "failed"]


def test_optuna_trials_tune_never_saved_are_failed() -> None:
    study = optuna.create_study(direction="maximize")
    kept = study.ask()
    lost = study.ask()  # asked for, then the control plane died before Tune saved its state
    told = study.ask()
    study.tell(told, 0.5)
    search_alg = SimpleNamespace(searcher=SimpleNamespace(searcher=SimpleNamespace(
        _ot_study=study, _ot_trials={"a": kept, "c": told})))  # SearchGenerator -> ConcurrencyLimiter -> OptunaSearch
    assert fail_forgotten_optuna_trials(search_alg) == [lost.number]
    states = [t.state.name for t in study.get_trials()]
    assert states == ["RUNNING", "FAIL", "COMPLETE"]
    assert fail_forgotten_optuna_trials(SimpleNamespace(searcher=None)) == []  # Hyperopt: nothing to settle
