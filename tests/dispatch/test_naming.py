"""Ray names of a study's work: ``study-7/trial-3`` for a trial's actor, ``study-7/export``
for the export task. Tune trials are real ``Trial`` objects built without a cluster."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.experiment.experiment import Experiment

from searchsvc.dispatch.naming import TrialNamer, export_task_name, trial_display_name, tune_trial_number
from searchsvc.dispatch.trainable import named_actor_trainable


def _trial(tag: str, *, trial_id: str = "ab12cd34", namer: Any = None) -> Trial:
    return Trial("__fake", experiment_tag=tag, trial_id=trial_id, trial_name_creator=namer, stub=True)


def test_names_carry_the_study_and_the_trial() -> None:
    assert trial_display_name(7, 3) == "study-7/trial-3"
    assert export_task_name(7) == "study-7/export"


def test_the_trial_number_is_tunes_count_from_zero() -> None:
    # Tune's searcher tags trials "<count>_<params>", counting from 1
    assert tune_trial_number(_trial("1_lr=0.0100")) == 0
    assert tune_trial_number(_trial("12_lr=0.0100,method=lora")) == 11
    assert tune_trial_number(_trial("4")) == 3
    for tag in ("", "lr=0.01", "0_lr=0.01", "x3_lr=0.01"):
        assert tune_trial_number(_trial(tag)) is None, tag


def test_a_tune_trial_is_named_after_its_study_and_number() -> None:
    trial = _trial("4_lr=0.0100", namer=TrialNamer(7))
    assert str(trial) == "study-7/trial-3"
    assert trial.trial_id == "ab12cd34"  # Ray's id is untouched: SQL and restore key on it
    assert trial._generate_dirname().startswith("study-7_trial-3_4_lr=0.0100_")  # a folder name without "/"


def test_a_trial_without_a_count_is_named_by_its_ray_id() -> None:
    assert str(_trial("lr=0.01", trial_id="ffee0011", namer=TrialNamer(2))) == "study-2/trial-ffee0011"


def test_the_trial_actor_shows_its_trial_name_and_keeps_the_trainable_name() -> None:
    def searchsvc_trial(config: dict[str, Any]) -> None:
        tune.report({"objective": 1.0})

    trainable = tune.with_resources(named_actor_trainable(searchsvc_trial), {"cpu": 1, "gpu": 0})
    # A Tune experiment saved before keeps restoring: Tune checks the trainable's name.
    assert Experiment.get_trainable_name(trainable) == "searchsvc_trial"
    # Ray's dashboard shows an actor's repr; a live trainable needs a Ray session, so the
    # method is called on an object with just the trial's name (Trainable.trial_name's source).
    assert trainable.__repr__(SimpleNamespace(trial_name="study-7/trial-3")) == "study-7/trial-3"
