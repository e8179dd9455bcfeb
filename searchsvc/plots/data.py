"""What a plot is drawn from: one study's trials and reports as they stand in SQL right now.

Read through the store (ownership checked there: another user's study is NotFoundError),
so a plot of a running study simply shows what has been reported so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from searchsvc.errors import NotFoundError
from searchsvc.store import Report, Store, Study, Trial


@dataclass(frozen=True)
class StudyData:
    """A study with its trials (by number) and each trial's reports, one per epoch.

    A trial retried after a failure reports its epochs again in its next attempt; only the
    latest attempt's report of each epoch is kept, which is what that trial's model did.
    """

    study: Study
    trials: list[Trial]
    reports: dict[int, list[Report]]  # trial id -> reports by epoch

    @property
    def metric(self) -> str:
        return str(self.search.get("metric", "avg_dev_score"))

    @property
    def mode(self) -> str:
        return str(self.search.get("mode", "max"))

    @property
    def search(self) -> dict[str, Any]:
        return dict(self.study.spec.get("search") or {})

    @property
    def space(self) -> dict[str, dict[str, Any]]:
        return dict(self.search.get("space") or {})

    @property
    def task_names(self) -> list[str]:
        return [str(t.get("name")) for t in self.study.spec.get("tasks") or []]

    def better(self, a: float, b: float) -> bool:
        """Whether objective ``a`` beats ``b`` under the study's mode."""
        return a > b if self.mode == "max" else a < b

    def best_trial(self) -> Trial | None:
        scored = [t for t in self.trials if t.best_objective is not None]
        if not scored:
            return None
        best = scored[0]
        for trial in scored[1:]:
            if self.better(float(trial.best_objective), float(best.best_objective)):  # type: ignore[arg-type]
                best = trial
        return best

    def pick_trial(self, number: int | None, *, needs: str | None = None) -> Trial | None:
        """The trial numbered ``number`` (NotFoundError if absent); by default the best so far,
        else the latest trial that reported a metric key starting with ``needs``."""
        if number is not None:
            for trial in self.trials:
                if trial.number == number:
                    return trial
            raise NotFoundError(f"study {self.study.id} has no trial #{number}")
        best = self.best_trial()
        if best is not None and (needs is None or _has(self.reports.get(best.id, []), needs)):
            return best
        for trial in reversed(self.trials):
            if needs is None or _has(self.reports.get(trial.id, []), needs):
                return trial
        return best

    def started_at(self) -> datetime | None:
        """When the study started (or its first report, for a study without a start time)."""
        times = [r.created_at for reports in self.reports.values() for r in reports if r.created_at is not None]
        candidates = [t for t in (self.study.started_at, min(times, default=None)) if t is not None]
        return min((_utc(t) for t in candidates), default=None)


def _has(reports: list[Report], prefix: str) -> bool:
    return any(any(key.startswith(prefix) for key in r.metrics) for r in reports)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def seconds_since(start: datetime, moment: datetime | None) -> float | None:
    return None if moment is None else (_utc(moment) - start).total_seconds()


def latest_attempt_by_epoch(reports: list[Report]) -> list[Report]:
    """One report per epoch: the latest attempt's, in epoch order."""
    by_epoch: dict[int, Report] = {}
    for report in sorted(reports, key=lambda r: (r.attempt, r.epoch)):
        by_epoch[report.epoch] = report
    return [by_epoch[e] for e in sorted(by_epoch)]


def load_study_data(store: Store, study_id: int, *, owner_id: int | None) -> StudyData:
    """The study, its trials and their reports. Raises NotFoundError for another user's study."""
    study = store.get_study(study_id, owner_id=owner_id)
    trials = store.list_trials(study_id, owner_id=owner_id)
    reports = {t.id: latest_attempt_by_epoch(store.list_reports(study_id, t.id, owner_id=owner_id)) for t in trials}
    return StudyData(study=study, trials=sorted(trials, key=lambda t: t.number), reports=reports)
