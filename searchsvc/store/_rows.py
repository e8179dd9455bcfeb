"""Rows to domain types, and the row lookups every part of the store shares.

This is the only module that knows both the ORM rows of :mod:`searchsvc.store.models`
and the frozen types of :mod:`searchsvc.store.types`. Lists are converted in a fixed
number of queries whatever their length (no query per row), because the API's list
routes are read far more often than anything is written.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from searchsvc.errors import NotFoundError
from searchsvc.store.models import AttemptRow, DatasetRow, ReportRow, StudyRow, TokenRow, TrialRow, UserRow, utcnow
from searchsvc.store.types import UNFINISHED_TRIAL_STATES, Attempt, Dataset, Report, Study, Token, Trial, User


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def user_of(row: UserRow) -> User:
    return User(id=row.id, name=row.name, created_at=aware(row.created_at))  # type: ignore[arg-type]


def token_of(row: TokenRow) -> Token:
    return Token(id=row.id, user_id=row.user_id, label=row.label, created_at=aware(row.created_at),  # type: ignore[arg-type]
                 expires_at=aware(row.expires_at))


def dataset_of(row: DatasetRow) -> Dataset:
    return Dataset(id=row.id, owner_id=row.owner_id, name=row.name, folder=row.folder, train_bytes=row.train_bytes,
                   dev_bytes=row.dev_bytes, meta_bytes=row.meta_bytes, train_rows=row.train_rows, dev_rows=row.dev_rows,
                   created_at=aware(row.created_at))  # type: ignore[arg-type]


def report_of(row: ReportRow) -> Report:
    return Report(
        id=row.id,
        trial_id=row.trial_id,
        attempt=row.attempt,
        epoch=row.epoch,
        objective=row.objective,
        metrics=row.metrics,
        checkpoint_path=row.checkpoint_path,
        created_at=aware(row.created_at),
    )


# Ids are 32-bit INTEGER columns on PostgreSQL (64-bit on SQLite); a larger id from a URL
# names no row, and must answer 404 rather than an overflow error from the driver.
MAX_ID = 2**31 - 1


def id_in_range(value: int) -> bool:
    """Whether ``value`` can be a row id at all (checked before it reaches the database)."""
    return 1 <= value <= MAX_ID


def study_row(session: Session, study_id: int, owner_id: int | None, *, lock: bool = False) -> StudyRow:
    """The study's row; NotFoundError if absent or (with ``owner_id``) someone else's, so
    another user's study is indistinguishable from a missing one."""
    row = session.get(StudyRow, study_id, with_for_update=lock) if id_in_range(study_id) else None
    if row is None or (owner_id is not None and row.owner_id != owner_id):
        raise NotFoundError(f"study {study_id} not found")
    return row


def study_of(session: Session, row: StudyRow, *, owner: str | None = None) -> Study:
    """The study as a domain type; ``owner`` (the owner's name) saves a lookup when known."""
    if owner is None:
        owner = session.get_one(UserRow, row.owner_id).name
    return Study(
        id=row.id,
        name=row.name,
        owner=owner,
        owner_id=row.owner_id,
        state=row.state,  # type: ignore[arg-type]
        spec=row.spec,
        stop_requested=row.stop_requested,
        error=row.error,
        created_at=aware(row.created_at),  # type: ignore[arg-type]
        updated_at=aware(row.updated_at),  # type: ignore[arg-type]
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
        ray_experiment=row.ray_experiment,
        dashboard_url=row.dashboard_url,
        control=row.control,
        artifact_path=row.artifact_path,
        restarts=row.restarts,
    )


def trials_of(session: Session, where: ColumnElement[bool]) -> list[Trial]:
    """The trials ``where`` selects (a condition on :class:`TrialRow`, e.g. their study), in
    order, as domain types with their report counts and attempts: three queries however
    many trials, each filtering by the condition rather than by an ``IN`` list of ids."""
    rows = session.scalars(select(TrialRow).where(where).order_by(TrialRow.study_id, TrialRow.number)).all()
    if not rows:
        return []
    counts = dict(
        session.execute(
            select(ReportRow.trial_id, func.count())
            .join(TrialRow, TrialRow.id == ReportRow.trial_id)
            .where(where)
            .group_by(ReportRow.trial_id)
        ).all()
    )
    attempts: dict[int, list[Attempt]] = defaultdict(list)
    for a in session.scalars(
        select(AttemptRow).join(TrialRow, TrialRow.id == AttemptRow.trial_id).where(where).order_by(AttemptRow.attempt)
    ):
        attempts[a.trial_id].append(
            Attempt(attempt=a.attempt, state=a.state, error=a.error, started_at=aware(a.started_at), finished_at=aware(a.finished_at))
        )
    return [_trial(row, num_reports=int(counts.get(row.id, 0)), attempts=tuple(attempts[row.id])) for row in rows]


def trial_of(session: Session, row: TrialRow) -> Trial:
    """One trial as a domain type (the session's autoflush sends ``row``'s changes first)."""
    return trials_of(session, TrialRow.id == row.id)[0]


def _trial(row: TrialRow, *, num_reports: int, attempts: tuple[Attempt, ...]) -> Trial:
    return Trial(
        id=row.id,
        study_id=row.study_id,
        number=row.number,
        ray_trial_id=row.ray_trial_id,
        state=row.state,  # type: ignore[arg-type]
        config=row.config,
        attempt=row.attempt,
        error=row.error,
        created_at=aware(row.created_at),  # type: ignore[arg-type]
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
        checkpoint_path=row.checkpoint_path,
        best_objective=row.best_objective,
        num_reports=num_reports,
        attempts=attempts,
    )


def attempt_row(session: Session, trial: TrialRow) -> AttemptRow:
    """The row of the trial's current attempt, created if a trial predates attempts."""
    attempt = session.scalar(select(AttemptRow).where(AttemptRow.trial_id == trial.id, AttemptRow.attempt == trial.attempt))
    if attempt is None:
        attempt = AttemptRow(trial_id=trial.id, attempt=trial.attempt, state=trial.state)
        session.add(attempt)
    return attempt


def close_trials(session: Session, study_id: int, state: str, error: str | None) -> int:
    """Give every unfinished trial of the study (and its current attempt) a final state."""
    rows = session.scalars(
        select(TrialRow).where(TrialRow.study_id == study_id, TrialRow.state.in_(UNFINISHED_TRIAL_STATES))
    ).all()
    now = utcnow()
    for row in rows:
        row.state, row.error, row.finished_at = state, error, now
        attempt = attempt_row(session, row)
        attempt.state, attempt.error, attempt.finished_at = state, error, now
    return len(rows)
