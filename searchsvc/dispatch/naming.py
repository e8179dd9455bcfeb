"""How a study's work is named in Ray, so its dashboard reads per study: ``study-7/trial-3``.

Ray's dashboard lists actors by class (every trial is a ``searchsvc_trial``) and tasks by
function; these names tell them apart. They are display names only: Ray's trial ids stay
as Tune makes them (SQL and restore key on ``ray_trial_id``), and Tune's trial folders
take the name with ``/`` replaced.

The trial number is Tune's count of the trials it created in the study, from 0. Our
trial number in SQL counts trials as they start; FIFO and ASHA start trials in the order
Tune created them, so the two agree. (A control plane killed between a trial's start and
Tune's next save of its state can leave them one apart for later trials: Tune then
recreates that trial under the same count.)
"""

from __future__ import annotations

from typing import Any


def trial_display_name(study_id: int, number: int | str) -> str:
    """``study-<id>/trial-<number>``: the name of one trial's actor in Ray's dashboard."""
    return f"study-{study_id}/trial-{number}"


def export_task_name(study_id: int) -> str:
    """``study-<id>/export``: the name of the Ray task that builds the study's artifact."""
    return f"study-{study_id}/export"


def tune_trial_number(trial: Any) -> int | None:
    """Which trial of its experiment a Tune trial is, from 0; None if Tune did not say.

    Tune's searcher tags each trial it creates ``<count>_<params>``, counting from 1 (and
    restores the count with the searcher after a restart).
    """
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    return int(head) - 1 if head.isdigit() and int(head) > 0 else None


class TrialNamer:
    """Tune's ``trial_name_creator`` for one study: ``study-7/trial-3``.

    A class rather than a closure so it pickles by reference into Tune's saved state.
    A trial whose tag carries no count is named by its Ray trial id instead, which is
    still unique within the study.
    """

    def __init__(self, study_id: int) -> None:
        self.study_id = study_id

    def __call__(self, trial: Any) -> str:
        number = tune_trial_number(trial)
        return trial_display_name(self.study_id, trial.trial_id if number is None else number)
