"""Studies: creation, the state machine the runners and users drive, and progress tallies."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from searchsvc.errors import ConflictError, NotFoundError, SpecError
from searchsvc.spec import StudySpec
from searchsvc.store._base import StoreBase
from searchsvc.store._rows import close_trials, study_of, study_row
from searchsvc.store.models import StudyRow, TrialRow, UserRow, utcnow
from searchsvc.store.types import TERMINAL_STUDY_STATES, TRIAL_STATES, UNFINISHED_TRIAL_STATES, Study, TrialTally


class StudiesStore(StoreBase):
    def create_study(self, owner_id: int, spec: StudySpec) -> Study:
        with self._scope() as session:
            row = StudyRow(name=spec.name, owner_id=owner_id, spec=spec.to_dict(), state="pending", stop_requested=False)
            session.add(row)
            session.flush()
            return study_of(session, row)

    def get_study(self, study_id: int, *, owner_id: int | None = None) -> Study:
        """Raises NotFoundError if absent or, when ``owner_id`` is given, owned by someone else."""
        with self._scope() as session:
            return study_of(session, study_row(session, study_id, owner_id))

    def list_studies(self, *, owner_id: int | None = None, states: Iterable[str] | None = None) -> list[Study]:
        with self._scope() as session:
            query = select(StudyRow, UserRow.name).join(UserRow, UserRow.id == StudyRow.owner_id).order_by(StudyRow.id)
            if owner_id is not None:
                query = query.where(StudyRow.owner_id == owner_id)
            if states is not None:
                query = query.where(StudyRow.state.in_(list(states)))
            return [study_of(session, row, owner=owner) for row, owner in session.execute(query)]

    def tally_trials(self, study_ids: Iterable[int]) -> dict[int, TrialTally]:
        """Per study: trials per state (absent states count 0) and the best objective so far
        (each trial keeps its best; the study's is their max or min by the study's mode).

        Two grouped queries for any number of studies, so listing studies with their
        progress costs the same for one study as for a hundred.
        """
        ids = list(dict.fromkeys(study_ids))
        if not ids:
            return {}
        with self._scope() as session:
            counts = _count_states(session, ids)
            modes = {
                sid: (spec.get("search") or {}).get("mode", "max")
                for sid, spec in session.execute(select(StudyRow.id, StudyRow.spec).where(StudyRow.id.in_(ids)))
            }
            extremes = {
                sid: (high, low)
                for sid, high, low in session.execute(
                    select(TrialRow.study_id, func.max(TrialRow.best_objective), func.min(TrialRow.best_objective))
                    .where(TrialRow.study_id.in_(ids))
                    .group_by(TrialRow.study_id)
                )
            }
            return {
                sid: TrialTally(counts=counts[sid], best_objective=_best(extremes.get(sid), modes.get(sid, "max")))
                for sid in ids
            }

    def trial_counts(self, study_id: int) -> dict[str, int]:
        """How many of the study's trials are in each state (absent states count 0)."""
        with self._scope() as session:
            return _count_states(session, [study_id])[study_id]

    def request_stop(self, study_id: int, *, owner_id: int | None = None) -> Study:
        """Ask a study to stop. A pending study stops at once; a running one is flagged and
        its runner stops it. Raises NotFoundError, or ConflictError if already finished."""
        with self._scope() as session:
            row = study_row(session, study_id, owner_id, lock=True)
            if row.state in TERMINAL_STUDY_STATES:
                raise ConflictError(f"study {study_id} is already {row.state}")
            row.stop_requested = True
            if row.state in ("pending", "paused"):
                row.state = "stopped"
                row.control = None
                row.finished_at = utcnow()
                close_trials(session, study_id, "stopped", None)
            session.flush()
            return study_of(session, row)

    def request_pause(self, study_id: int, *, owner_id: int | None = None) -> Study:
        """Pause a study: a pending one at once; a running one's runner saves its Tune state
        and ends, keeping unfinished trials resumable. Raises NotFoundError or ConflictError."""
        with self._scope() as session:
            row = study_row(session, study_id, owner_id, lock=True)
            if row.state == "pending":
                row.state = "paused"
            elif row.state == "running" and not row.stop_requested:
                row.control = "pause"
            else:
                raise ConflictError(f"study {study_id} is {row.state}; only a pending or running study can be paused")
            session.flush()
            return study_of(session, row)

    def request_resume(self, study_id: int, *, owner_id: int | None = None) -> Study:
        """Queue a paused study again; its runner restores the saved Tune state.
        Raises NotFoundError, or ConflictError unless the study is paused."""
        with self._scope() as session:
            row = study_row(session, study_id, owner_id, lock=True)
            if row.state != "paused":
                raise ConflictError(f"study {study_id} is {row.state}; only a paused study can be resumed")
            row.state = "pending"
            row.control = None
            session.flush()
            return study_of(session, row)

    def pause_study(self, study_id: int) -> Study:
        """The runner paused: unfinished trials wait as paused until the study resumes."""
        with self._scope() as session:
            row = study_row(session, study_id, None, lock=True)
            row.state = "paused"
            row.control = None
            session.execute(
                update(TrialRow)
                .where(TrialRow.study_id == study_id, TrialRow.state.in_(UNFINISHED_TRIAL_STATES))
                .values(state="paused")
            )
            session.flush()
            return study_of(session, row)

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
                out.append(study_of(session, row))
        return out

    def requeue(self, study_id: int) -> Study:
        """A running study whose runner was interrupted goes back to pending, to be restored."""
        with self._scope() as session:
            row = study_row(session, study_id, None, lock=True)
            if row.state == "running":
                row.state = "pending"
                row.restarts += 1
            session.flush()
            return study_of(session, row)

    def study_control(self, study_id: int) -> tuple[bool, str | None]:
        """``(stop_requested, control)``: what the study's runner is being asked to do."""
        with self._scope() as session:
            row = session.execute(select(StudyRow.stop_requested, StudyRow.control).where(StudyRow.id == study_id)).first()
            if row is None:
                raise NotFoundError(f"study {study_id} not found")
            return bool(row[0]), row[1]

    def set_artifact(self, study_id: int, path: str) -> None:
        with self._scope() as session:
            study_row(session, study_id, None).artifact_path = path

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
            return study_of(session, session.get_one(StudyRow, study_id))

    def set_study_ray_info(self, study_id: int, *, experiment: str, dashboard_url: str | None) -> None:
        with self._scope() as session:
            row = study_row(session, study_id, None)
            row.ray_experiment = experiment
            row.dashboard_url = dashboard_url

    def finish_study(self, study_id: int, state: str, *, error: str | None = None) -> Study:
        """Record a study's final state. Raises SpecError for a non-terminal state."""
        if state not in TERMINAL_STUDY_STATES:
            raise SpecError([("state", f"{state!r} is not a final study state")])
        with self._scope() as session:
            row = study_row(session, study_id, None, lock=True)
            row.state = state
            row.error = error
            row.finished_at = utcnow()
            session.flush()
            return study_of(session, row)


def _best(extremes: tuple[float | None, float | None] | None, mode: str) -> float | None:
    if extremes is None:
        return None
    high, low = extremes
    return high if mode == "max" else low


def _count_states(session: Session, study_ids: list[int]) -> dict[int, dict[str, int]]:
    """Per study, its trials per state (absent states count 0), in one grouped query."""
    counts: dict[int, dict[str, int]] = {i: dict.fromkeys(TRIAL_STATES, 0) for i in study_ids}
    for sid, state, n in session.execute(
        select(TrialRow.study_id, TrialRow.state, func.count())
        .where(TrialRow.study_id.in_(study_ids))
        .group_by(TrialRow.study_id, TrialRow.state)
    ):
        counts[sid][state] = int(n)
    return counts
