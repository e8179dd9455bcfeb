"""The SQL store: the system of record for users, studies, trials and reports.

Thread- and process-safety: a :class:`Store` may be shared by threads (each call opens
its own session), and several processes (API, dispatcher, study runners) may open the
same database; each method is one transaction. Rows never leave this module: every
method returns the frozen types of :mod:`searchsvc.store.types`, and this is the only
module that converts between the two.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from searchsvc.errors import AuthError, ConflictError, NotFoundError, SpecError
from searchsvc.spec import StudySpec
from searchsvc.store.database import make_engine, migrate, session_scope
from searchsvc.store.models import AttemptRow, ReportRow, StudyRow, TokenRow, TrialRow, UserRow, utcnow
from searchsvc.store.types import (
    TERMINAL_STUDY_STATES,
    TRIAL_STATES,
    UNFINISHED_TRIAL_STATES,
    Attempt,
    Report,
    Study,
    Trial,
    User,
)

TOKEN_PREFIX = "ss_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class Store:
    """All persistent state. Each method is one transaction and says what it raises."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, apply_migrations: bool = True) -> Store:
        """Connect to ``url`` and, by default, migrate its schema to the newest revision."""
        engine = make_engine(url)
        if apply_migrations:
            migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # Ray Tune pickles its callbacks (which hold a store); a store travels as its URL and
    # reconnects on arrival, without re-running migrations.
    def __getstate__(self) -> dict[str, str]:
        return {"url": self.engine.url.render_as_string(hide_password=False)}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(make_engine(state["url"]))  # type: ignore[misc]

    def _scope(self):  # type: ignore[no-untyped-def]
        return session_scope(self._sessions)

    # ---- users and tokens -------------------------------------------------------------

    def get_or_create_user(self, name: str) -> User:
        """Raises SpecError for an empty or over-long name."""
        name = name.strip()
        if not name or len(name) > 100:
            raise SpecError([("user", "must be 1-100 characters")])
        with self._scope() as session:
            row = session.scalar(select(UserRow).where(UserRow.name == name))
            if row is None:
                row = UserRow(name=name)
                session.add(row)
                session.flush()
            return _user(row)

    def issue_token(self, user_name: str) -> tuple[User, str]:
        """Create a new API token for ``user_name`` (creating the user if needed).

        Returns the user and the plaintext token, which is shown once and never stored.
        """
        user = self.get_or_create_user(user_name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._scope() as session:
            session.add(TokenRow(user_id=user.id, token_hash=hash_token(token)))
        return user, token

    def authenticate(self, token: str | None) -> User:
        """Raises AuthError when the token is missing or matches no user."""
        if not token:
            raise AuthError("missing bearer token")
        with self._scope() as session:
            row = session.scalar(
                select(UserRow).join(TokenRow, TokenRow.user_id == UserRow.id).where(TokenRow.token_hash == hash_token(token))
            )
            if row is None:
                raise AuthError("invalid token")
            return _user(row)

    # ---- studies ----------------------------------------------------------------------

    def create_study(self, owner_id: int, spec: StudySpec) -> Study:
        with self._scope() as session:
            row = StudyRow(name=spec.name, owner_id=owner_id, spec=spec.to_dict(), state="pending", stop_requested=False)
            session.add(row)
            session.flush()
            return self._study(session, row)

    def get_study(self, study_id: int, *, owner_id: int | None = None) -> Study:
        """Raises NotFoundError if absent or, when ``owner_id`` is given, owned by someone else."""
        with self._scope() as session:
            return self._study(session, self._study_row(session, study_id, owner_id))

    def list_studies(self, *, owner_id: int | None = None, states: Iterable[str] | None = None) -> list[Study]:
        with self._scope() as session:
            query = select(StudyRow).order_by(StudyRow.id)
            if owner_id is not None:
                query = query.where(StudyRow.owner_id == owner_id)
            if states is not None:
                query = query.where(StudyRow.state.in_(list(states)))
            return [self._study(session, row) for row in session.scalars(query)]

    def request_stop(self, study_id: int, *, owner_id: int | None = None) -> Study:
        """Ask a study to stop. A pending study stops at once; a running one is flagged and
        its runner stops it. Raises NotFoundError, or ConflictError if already finished."""
        with self._scope() as session:
            row = self._study_row(session, study_id, owner_id, lock=True)
            if row.state in TERMINAL_STUDY_STATES:
                raise ConflictError(f"study {study_id} is already {row.state}")
            row.stop_requested = True
            if row.state in ("pending", "paused"):
                row.state = "stopped"
                row.control = None
                row.finished_at = utcnow()
                self._close_trials(session, study_id, "stopped", None)
            session.flush()
            return self._study(session, row)

    def request_pause(self, study_id: int, *, owner_id: int | None = None) -> Study:
        """Pause a study: a pending one at once; a running one's runner saves its Tune state
        and ends, keeping unfinished trials resumable. Raises NotFoundError or ConflictError."""
        with self._scope() as session:
            row = self._study_row(session, study_id, owner_id, lock=True)
            if row.state == "pending":
                row.state = "paused"
            elif row.state == "running" and not row.stop_requested:
                row.control = "pause"
            else:
                raise ConflictError(f"study {study_id} is {row.state}; only a pending or running study can be paused")
            session.flush()
            return self._study(session, row)

    def request_resume(self, study_id: int, *, owner_id: int | None = None) -> Study:
        """Queue a paused study again; its runner restores the saved Tune state.
        Raises NotFoundError, or ConflictError unless the study is paused."""
        with self._scope() as session:
            row = self._study_row(session, study_id, owner_id, lock=True)
            if row.state != "paused":
                raise ConflictError(f"study {study_id} is {row.state}; only a paused study can be resumed")
            row.state = "pending"
            row.control = None
            session.flush()
            return self._study(session, row)

    def pause_study(self, study_id: int) -> Study:
        """The runner paused: unfinished trials wait as paused until the study resumes."""
        with self._scope() as session:
            row = self._study_row(session, study_id, None, lock=True)
            row.state = "paused"
            row.control = None
            session.execute(
                update(TrialRow)
                .where(TrialRow.study_id == study_id, TrialRow.state.in_(UNFINISHED_TRIAL_STATES))
                .values(state="paused")
            )
            session.flush()
            return self._study(session, row)

    def requeue_interrupted(self) -> list[Study]:
        """After a control-plane restart, studies that were running have no runner: queue
        them again (their runners restore the saved Tune state), or pause them if a pause
        was requested. Returns the studies requeued."""
        out: list[Study] = []
        with self._scope() as session:
            for row in session.scalars(select(StudyRow).where(StudyRow.state == "running").with_for_update()):
                if row.control == "pause":
                    row.state = "paused"
                    row.control = None
                else:
                    row.state = "pending"
                    row.restarts += 1
                session.flush()
                out.append(self._study(session, row))
        return out

    def requeue(self, study_id: int) -> Study:
        """A running study whose runner was interrupted goes back to pending, to be restored."""
        with self._scope() as session:
            row = self._study_row(session, study_id, None, lock=True)
            if row.state == "running":
                row.state = "pending"
                row.restarts += 1
            session.flush()
            return self._study(session, row)

    def study_control(self, study_id: int) -> tuple[bool, str | None]:
        """``(stop_requested, control)``: what the study's runner is being asked to do."""
        with self._scope() as session:
            row = session.execute(select(StudyRow.stop_requested, StudyRow.control).where(StudyRow.id == study_id)).first()
            if row is None:
                raise NotFoundError(f"study {study_id} not found")
            return bool(row[0]), row[1]

    def set_artifact(self, study_id: int, path: str) -> None:
        with self._scope() as session:
            self._study_row(session, study_id, None).artifact_path = path

    def is_stop_requested(self, study_id: int) -> bool:
        with self._scope() as session:
            return bool(session.scalar(select(StudyRow.stop_requested).where(StudyRow.id == study_id)))

    def claim_study(self, study_id: int) -> Study | None:
        """Move one pending study to running; None if it is no longer pending (atomic)."""
        with self._scope() as session:
            result = session.execute(
                update(StudyRow)
                .where(StudyRow.id == study_id, StudyRow.state == "pending")
                .values(state="running", started_at=func.coalesce(StudyRow.started_at, utcnow()), updated_at=utcnow())
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return self._study(session, session.get_one(StudyRow, study_id))

    def set_study_ray_info(self, study_id: int, *, experiment: str, dashboard_url: str | None) -> None:
        with self._scope() as session:
            row = self._study_row(session, study_id, None)
            row.ray_experiment = experiment
            row.dashboard_url = dashboard_url

    def finish_study(self, study_id: int, state: str, *, error: str | None = None) -> Study:
        """Record a study's final state. Raises SpecError for a non-terminal state."""
        if state not in TERMINAL_STUDY_STATES:
            raise SpecError([("state", f"{state!r} is not a final study state")])
        with self._scope() as session:
            row = self._study_row(session, study_id, None, lock=True)
            row.state = state
            row.error = error
            row.finished_at = utcnow()
            session.flush()
            return self._study(session, row)

    # ---- trials -----------------------------------------------------------------------

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
            attempt = self._attempt_row(session, row)
            attempt.state = "running"
            attempt.started_at = attempt.started_at or utcnow()
            session.flush()
            return self._trial(session, row)

    def retry_trial(self, trial_id: int, *, error: str) -> Trial:
        """The trial's worker failed and Tune will run it again: close the attempt with its
        error and open the next one (pending until it starts)."""
        with self._scope() as session:
            row = session.get(TrialRow, trial_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"trial {trial_id} not found")
            current = self._attempt_row(session, row)
            current.state, current.error, current.finished_at = "failed", error, utcnow()
            row.attempt += 1
            row.state = "pending"
            session.add(AttemptRow(trial_id=row.id, attempt=row.attempt, state="pending"))
            session.flush()
            return self._trial(session, row)

    def _attempt_row(self, session: Session, trial: TrialRow) -> AttemptRow:
        attempt = session.scalar(select(AttemptRow).where(AttemptRow.trial_id == trial.id, AttemptRow.attempt == trial.attempt))
        if attempt is None:
            attempt = AttemptRow(trial_id=trial.id, attempt=trial.attempt, state=trial.state)
            session.add(attempt)
        return attempt

    def finish_trial(self, trial_id: int, state: str, *, error: str | None = None) -> Trial:
        if state not in TRIAL_STATES:
            raise SpecError([("state", f"unknown trial state {state!r}")])
        with self._scope() as session:
            row = session.get(TrialRow, trial_id)
            if row is None:
                raise NotFoundError(f"trial {trial_id} not found")
            row.state = state
            row.error = error
            row.finished_at = utcnow()
            attempt = self._attempt_row(session, row)
            attempt.state, attempt.error, attempt.finished_at = state, error, row.finished_at
            session.flush()
            return self._trial(session, row)

    def trial_by_ray_id(self, study_id: int, ray_trial_id: str) -> Trial:
        with self._scope() as session:
            row = session.scalar(select(TrialRow).where(TrialRow.study_id == study_id, TrialRow.ray_trial_id == ray_trial_id))
            if row is None:
                raise NotFoundError(f"no trial {ray_trial_id} in study {study_id}")
            return self._trial(session, row)

    def list_trials(self, study_id: int, *, owner_id: int | None = None) -> list[Trial]:
        with self._scope() as session:
            self._study_row(session, study_id, owner_id)
            rows = session.scalars(select(TrialRow).where(TrialRow.study_id == study_id).order_by(TrialRow.number))
            return [self._trial(session, row) for row in rows]

    def get_trial(self, study_id: int, trial_id: int, *, owner_id: int | None = None) -> Trial:
        with self._scope() as session:
            self._study_row(session, study_id, owner_id)
            row = session.get(TrialRow, trial_id)
            if row is None or row.study_id != study_id:
                raise NotFoundError(f"trial {trial_id} not found in study {study_id}")
            return self._trial(session, row)

    def mark_unfinished_trials(self, study_id: int, state: str, *, error: str | None = None) -> int:
        """Close every trial still pending, running or paused (after a stop or a crash). Returns how many."""
        with self._scope() as session:
            return self._close_trials(session, study_id, state, error)

    def _close_trials(self, session: Session, study_id: int, state: str, error: str | None) -> int:
        rows = session.scalars(
            select(TrialRow).where(TrialRow.study_id == study_id, TrialRow.state.in_(UNFINISHED_TRIAL_STATES))
        ).all()
        now = utcnow()
        for row in rows:
            row.state, row.error, row.finished_at = state, error, now
            attempt = self._attempt_row(session, row)
            attempt.state, attempt.error, attempt.finished_at = state, error, now
        return len(rows)

    def trial_counts(self, study_id: int) -> dict[str, int]:
        """How many of the study's trials are in each state (absent states count 0)."""
        with self._scope() as session:
            rows = session.execute(
                select(TrialRow.state, func.count()).where(TrialRow.study_id == study_id).group_by(TrialRow.state)
            ).all()
            counts = {state: 0 for state in TRIAL_STATES}
            counts.update({state: int(n) for state, n in rows})
            return counts

    def count_by_state(self) -> tuple[dict[str, int], dict[str, int], int]:
        """Studies and trials per state and the number of reports (for /metrics)."""
        with self._scope() as session:
            studies = dict(session.execute(select(StudyRow.state, func.count()).group_by(StudyRow.state)).all())
            trials = dict(session.execute(select(TrialRow.state, func.count()).group_by(TrialRow.state)).all())
            reports = session.scalar(select(func.count()).select_from(ReportRow)) or 0
            return {k: int(v) for k, v in studies.items()}, {k: int(v) for k, v in trials.items()}, int(reports)

    # ---- reports ----------------------------------------------------------------------

    def add_report(
        self, trial_id: int, *, epoch: int, objective: float | None, metrics: dict[str, Any], mode: str = "max"
    ) -> Report:
        """Store one epoch's report for the trial's current attempt, exactly once.

        A repeated (trial, attempt, epoch) returns the stored report unchanged, so a
        replayed result cannot create a duplicate.
        """
        with self._scope() as session:
            trial = session.get(TrialRow, trial_id, with_for_update=True)
            if trial is None:
                raise NotFoundError(f"trial {trial_id} not found")
            existing = session.scalar(
                select(ReportRow).where(ReportRow.trial_id == trial_id, ReportRow.attempt == trial.attempt, ReportRow.epoch == epoch)
            )
            if existing is not None:
                return _report(existing)
            row = ReportRow(trial_id=trial_id, attempt=trial.attempt, epoch=epoch, objective=objective, metrics=metrics)
            session.add(row)
            if objective is not None and (
                trial.best_objective is None
                or (objective > trial.best_objective if mode == "max" else objective < trial.best_objective)
            ):
                trial.best_objective = objective
            session.flush()
            return _report(row)

    def attach_checkpoint(self, trial_id: int, *, path: str) -> None:
        """Attach a checkpoint to the trial's latest report. It becomes the trial's own
        checkpoint (what the artifact is built from) only if that report is the trial's best."""
        with self._scope() as session:
            trial = session.get(TrialRow, trial_id, with_for_update=True)
            if trial is None:
                raise NotFoundError(f"trial {trial_id} not found")
            latest = session.scalar(
                select(ReportRow).where(ReportRow.trial_id == trial_id).order_by(ReportRow.attempt.desc(), ReportRow.epoch.desc()).limit(1)
            )
            if latest is not None:
                latest.checkpoint_path = path
            if latest is None or latest.objective is None or trial.checkpoint_path is None or latest.objective == trial.best_objective:
                trial.checkpoint_path = path
            # Ray keeps only the latest and the best checkpoint of a trial; forget the others'
            # paths so no report points at a deleted folder.
            keep = {path, trial.checkpoint_path}
            session.execute(
                update(ReportRow)
                .where(ReportRow.trial_id == trial_id, ReportRow.checkpoint_path.is_not(None), ReportRow.checkpoint_path.not_in(keep))
                .values(checkpoint_path=None)
            )

    def list_reports(self, study_id: int, trial_id: int, *, owner_id: int | None = None) -> list[Report]:
        with self._scope() as session:
            self._study_row(session, study_id, owner_id)
            trial = session.get(TrialRow, trial_id)
            if trial is None or trial.study_id != study_id:
                raise NotFoundError(f"trial {trial_id} not found in study {study_id}")
            rows = session.scalars(select(ReportRow).where(ReportRow.trial_id == trial_id).order_by(ReportRow.attempt, ReportRow.epoch))
            return [_report(row) for row in rows]

    def best_trial(self, study_id: int, *, owner_id: int | None = None) -> tuple[Trial, Report] | None:
        """The trial whose best report has the best objective, with that report; None if
        no report has an objective yet. Ties go to the earlier trial."""
        with self._scope() as session:
            study = self._study_row(session, study_id, owner_id)
            mode = (study.spec.get("search") or {}).get("mode", "max")
            order = ReportRow.objective.desc() if mode == "max" else ReportRow.objective.asc()
            row = session.execute(
                select(ReportRow, TrialRow)
                .join(TrialRow, TrialRow.id == ReportRow.trial_id)
                .where(TrialRow.study_id == study_id, ReportRow.objective.is_not(None))
                .order_by(order, TrialRow.number, ReportRow.epoch)
                .limit(1)
            ).first()
            if row is None:
                return None
            report_row, trial_row = row
            return self._trial(session, trial_row), _report(report_row)

    # ---- conversion (the only place that knows both rows and types) ------------------

    def _study_row(self, session: Session, study_id: int, owner_id: int | None, *, lock: bool = False) -> StudyRow:
        row = session.get(StudyRow, study_id, with_for_update=lock)
        if row is None or (owner_id is not None and row.owner_id != owner_id):
            raise NotFoundError(f"study {study_id} not found")
        return row

    def _study(self, session: Session, row: StudyRow) -> Study:
        owner = session.get_one(UserRow, row.owner_id)
        return Study(
            id=row.id,
            name=row.name,
            owner=owner.name,
            owner_id=row.owner_id,
            state=row.state,  # type: ignore[arg-type]
            spec=row.spec,
            stop_requested=row.stop_requested,
            error=row.error,
            created_at=_aware(row.created_at),  # type: ignore[arg-type]
            updated_at=_aware(row.updated_at),  # type: ignore[arg-type]
            started_at=_aware(row.started_at),
            finished_at=_aware(row.finished_at),
            ray_experiment=row.ray_experiment,
            dashboard_url=row.dashboard_url,
            control=row.control,
            artifact_path=row.artifact_path,
            restarts=row.restarts,
        )

    def _trial(self, session: Session, row: TrialRow) -> Trial:
        count = session.scalar(select(func.count()).select_from(ReportRow).where(ReportRow.trial_id == row.id)) or 0
        return Trial(
            id=row.id,
            study_id=row.study_id,
            number=row.number,
            ray_trial_id=row.ray_trial_id,
            state=row.state,  # type: ignore[arg-type]
            config=row.config,
            attempt=row.attempt,
            error=row.error,
            created_at=_aware(row.created_at),  # type: ignore[arg-type]
            started_at=_aware(row.started_at),
            finished_at=_aware(row.finished_at),
            checkpoint_path=row.checkpoint_path,
            best_objective=row.best_objective,
            num_reports=int(count),
            attempts=tuple(
                Attempt(attempt=a.attempt, state=a.state, error=a.error, started_at=_aware(a.started_at), finished_at=_aware(a.finished_at))
                for a in session.scalars(select(AttemptRow).where(AttemptRow.trial_id == row.id).order_by(AttemptRow.attempt))
            ),
        )


def _user(row: UserRow) -> User:
    return User(id=row.id, name=row.name, created_at=_aware(row.created_at))  # type: ignore[arg-type]


def _report(row: ReportRow) -> Report:
    return Report(
        id=row.id,
        trial_id=row.trial_id,
        attempt=row.attempt,
        epoch=row.epoch,
        objective=row.objective,
        metrics=row.metrics,
        checkpoint_path=row.checkpoint_path,
        created_at=_aware(row.created_at),
    )
