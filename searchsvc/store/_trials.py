"""Trials and their attempts: started, retried, finished, listed; and counts for /metrics."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import delete, func, select

from searchsvc.errors import NotFoundError, SpecError
from searchsvc.store._base import StoreBase
from searchsvc.store._rows import attempt_row, close_trials, id_in_range, study_row, trial_of, trials_of
from searchsvc.store.models import AttemptRow, ReportRow, StudyRow, TrialRow, utcnow
from searchsvc.store.types import TRIAL_STATES, UNFINISHED_TRIAL_STATES, Trial

LOST_ERROR = (
    "lost: the control plane died before Ray Tune recorded this trial in its saved state, "
    "so the restored study could not continue it; Tune ran another trial in its place"
)


class TrialsStore(StoreBase):
    def start_trial(self, study_id: int, *, ray_trial_id: str, config: dict[str, Any]) -> Trial:
        """Record that a trial (re)started. A trial restored after a pause or a control-plane
        restart continues its current attempt; a retry got its new attempt in :meth:`retry_trial`."""
        with self._scope() as session:
            row = session.scalar(
                select(TrialRow).where(TrialRow.study_id == study_id, TrialRow.ray_trial_id == ray_trial_id).with_for_update()
            )
            if row is None:
                number = session.scalar(select(func.coalesce(func.max(TrialRow.number) + 1, 0)).where(TrialRow.study_id == study_id))
                row = TrialRow(study_id=study_id, number=number, ray_trial_id=ray_trial_id, state="running", config=config, attempt=1)
                row.started_at = utcnow()
                session.add(row)
                session.flush()
            else:
                row.state = "running"
                row.error = None
                row.finished_at = None
            attempt = attempt_row(session, row)
            attempt.state = "running"
            attempt.started_at = attempt.started_at or utcnow()
            session.flush()
            return trial_of(session, row)

    def retry_trial(self, trial_id: int, *, error: str) -> Trial:
        """The trial's worker failed and Tune will run it again: close the attempt with its
        error and open the next one (pending until it starts)."""
        with self._scope() as session:
            row = session.get(TrialRow, trial_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"trial {trial_id} not found")
            current = attempt_row(session, row)
            current.state, current.error, current.finished_at = "failed", error, utcnow()
            row.attempt += 1
            row.state = "pending"
            session.add(AttemptRow(trial_id=row.id, attempt=row.attempt, state="pending"))
            session.flush()
            return trial_of(session, row)

    def finish_trial(self, trial_id: int, state: str, *, error: str | None = None) -> Trial:
        """Record how a trial ended. A trial's end is written once: a trial already
        completed, stopped or failed is returned as it stands, never rewritten (after a
        crash Tune may report the end of a trial SQL already holds as finished, and SQL
        is the system of record). Raises SpecError for an unknown state, NotFoundError."""
        if state not in TRIAL_STATES:
            raise SpecError([("state", f"unknown trial state {state!r}")])
        with self._scope() as session:
            row = session.get(TrialRow, trial_id, with_for_update=True) if id_in_range(trial_id) else None
            if row is None:
                raise NotFoundError(f"trial {trial_id} not found")
            if row.state not in UNFINISHED_TRIAL_STATES:
                return trial_of(session, row)
            row.state = state
            row.error = error
            row.finished_at = utcnow()
            attempt = attempt_row(session, row)
            attempt.state, attempt.error, attempt.finished_at = state, error, row.finished_at
            session.flush()
            return trial_of(session, row)

    def forget_unknown_trials(self, study_id: int, *, known_ray_ids: Collection[str]) -> list[Trial]:
        """Settle the unfinished trials a restored Tune experiment does not know.

        Tune saves its trial list every few seconds; a trial it started just before the
        control plane died may have its SQL row (written when it started) but no place
        in the saved state, so the restored study never continues it and runs another
        trial in its place. Such a row with no reports is deleted: nothing of it was
        ever shown as a result, and keeping it would count one trial too many. One with
        reports (a window of milliseconds: Tune saves right after a checkpoint) keeps
        them and ends as failed, with an error that says why. Returns the trials as they
        were before. One transaction.
        """
        with self._scope() as session:
            rows = session.scalars(
                select(TrialRow)
                .where(TrialRow.study_id == study_id, TrialRow.state.in_(UNFINISHED_TRIAL_STATES))
                .with_for_update()
            ).all()
            known = set(known_ray_ids)
            unknown = [row for row in rows if row.ray_trial_id not in known]
            if not unknown:
                return []
            before = trials_of(session, TrialRow.id.in_([row.id for row in unknown]))
            reported = {t.id for t in before if t.num_reports}
            now = utcnow()
            for row in unknown:
                if row.id in reported:
                    row.state, row.error, row.finished_at = "failed", LOST_ERROR, now
                    attempt = attempt_row(session, row)
                    attempt.state, attempt.error, attempt.finished_at = "failed", LOST_ERROR, now
                else:
                    session.execute(delete(AttemptRow).where(AttemptRow.trial_id == row.id))
                    session.delete(row)
            session.flush()
            return before

    def trial_by_ray_id(self, study_id: int, ray_trial_id: str) -> Trial:
        with self._scope() as session:
            row = session.scalar(select(TrialRow).where(TrialRow.study_id == study_id, TrialRow.ray_trial_id == ray_trial_id))
            if row is None:
                raise NotFoundError(f"no trial {ray_trial_id} in study {study_id}")
            return trial_of(session, row)

    def list_trials(self, study_id: int, *, owner_id: int | None = None) -> list[Trial]:
        """Every trial of the study in order, in three queries however many there are."""
        with self._scope() as session:
            study_row(session, study_id, owner_id)
            return trials_of(session, TrialRow.study_id == study_id)

    def get_trial(self, study_id: int, trial_id: int, *, owner_id: int | None = None) -> Trial:
        with self._scope() as session:
            study_row(session, study_id, owner_id)
            row = session.get(TrialRow, trial_id) if id_in_range(trial_id) else None
            if row is None or row.study_id != study_id:
                raise NotFoundError(f"trial {trial_id} not found in study {study_id}")
            return trial_of(session, row)

    def mark_unfinished_trials(self, study_id: int, state: str, *, error: str | None = None) -> int:
        """Close every trial still pending, running or paused (after a stop or a crash). Returns how many."""
        with self._scope() as session:
            return close_trials(session, study_id, state, error)

    def count_by_state(self) -> tuple[dict[str, int], dict[str, int], int]:
        """Studies and trials per state and the number of reports (for /metrics)."""
        with self._scope() as session:
            studies = dict(session.execute(select(StudyRow.state, func.count()).group_by(StudyRow.state)).all())
            trials = dict(session.execute(select(TrialRow.state, func.count()).group_by(TrialRow.state)).all())
            reports = session.scalar(select(func.count()).select_from(ReportRow)) or 0
            return {k: int(v) for k, v in studies.items()}, {k: int(v) for k, v in trials.items()}, int(reports)
