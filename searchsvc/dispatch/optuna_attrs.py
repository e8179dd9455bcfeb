"""Optuna trials that say which of our trials they are, and how each task scored.

Optuna's history of a study (see ``optuna_storage``) opens in optuna-dashboard or with
``optuna.load_study``, but on its own it holds only params and the objective. Each Optuna
trial here also carries, as user attributes:

- ``searchsvc_study_id``, ``searchsvc_trial_id`` (the id in our API: ``/v1/studies/S/trials/T``),
  ``searchsvc_trial_number``;
- from the trial's latest report, the one whose objective Optuna records: ``epoch`` and
  every score (``avg_dev_score``, ``<task>/score``, and the selection split's ``val/...``).

Attributes are written before each result reaches Optuna: Optuna refuses to change a
trial once told its final value. A failure to annotate is logged and never stops a study.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.search.optuna import OptunaSearch

from searchsvc.errors import NotFoundError
from searchsvc.store import Store

log = logging.getLogger("searchsvc.dispatch")


class TrialAnnotator:
    """``annotator(ray_trial_id, result) -> user attributes``. Picklable (the store travels as its URL)."""

    def __init__(self, store: Store, study_id: int) -> None:
        self.store = store
        self.study_id = study_id
        self._ours: dict[str, tuple[int, int]] = {}  # Ray trial id -> (our id, number)

    def __call__(self, ray_trial_id: str, result: dict[str, Any] | None) -> dict[str, Any]:
        attrs: dict[str, Any] = {"searchsvc_study_id": self.study_id}
        ours = self._lookup(ray_trial_id)
        if ours is not None:
            attrs["searchsvc_trial_id"], attrs["searchsvc_trial_number"] = ours
        for key, value in (result or {}).items():
            if _annotated(key) and _finite(value):
                attrs[key] = int(value) if key == "epoch" else float(value)
        return attrs

    def _lookup(self, ray_trial_id: str) -> tuple[int, int] | None:
        if ray_trial_id not in self._ours:
            try:
                trial = self.store.trial_by_ray_id(self.study_id, ray_trial_id)
            except NotFoundError:
                return None  # not started in SQL yet: the next result fills it in
            self._ours[ray_trial_id] = (trial.id, trial.number)
        return self._ours[ray_trial_id]


def _annotated(key: str) -> bool:
    """Scores a person looks for beside the objective: dev's and the selection split's
    (``val/...``), overall and per task, and the epoch they belong to."""
    return key == "epoch" or key.endswith("avg_dev_score") or key.endswith("/score")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))


class AnnotatedOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, writing ``annotate(ray_trial_id, result)`` as user attributes of
    the Optuna trial at every result and before the final tell."""

    def __init__(self, *args: Any, annotate: TrialAnnotator | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._annotate = annotate

    def _write_attrs(self, trial_id: str, result: dict[str, Any] | None) -> None:
        if self._annotate is None or trial_id not in self._ot_trials or trial_id in self._completed_trials:
            return
        try:
            ot_trial = self._ot_trials[trial_id]
            for key, value in self._annotate(trial_id, result).items():
                ot_trial.set_user_attr(key, value)
        except UpdateFinishedTrialError:
            # a restored searcher told again of a trial Optuna already holds as finished (the reconciler's
            # replay of SQL's final value): its attributes were written before its first end
            log.debug("Optuna trial for Ray trial %s is already finished; attributes kept", trial_id)
        except Exception:  # annotations are a courtesy; the search goes on
            log.warning("could not annotate Optuna trial for Ray trial %s", trial_id, exc_info=True)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._write_attrs(trial_id, result)
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self._write_attrs(trial_id, result)
        super().on_trial_complete(trial_id, result, error)
