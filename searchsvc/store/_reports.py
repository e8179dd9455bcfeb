"""Per-epoch reports (stored exactly once per trial, attempt and epoch) and checkpoints."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from searchsvc.errors import NotFoundError
from searchsvc.store._base import StoreBase
from searchsvc.store._rows import id_in_range, report_of, study_row, trial_of
from searchsvc.store.models import ReportRow, TrialRow
from searchsvc.store.types import Report, Trial


class ReportsStore(StoreBase):
    def add_report(
        self,
        trial_id: int,
        *,
        epoch: int,
        objective: float | None,
        metrics: dict[str, Any],
        mode: str = "max",
        checkpoint_path: str | None = None,
    ) -> Report:
        """Store one epoch's report for the trial's current attempt, exactly once, with the
        checkpoint written at that epoch (if any) in the same transaction.

        A repeated (trial, attempt, epoch) returns the stored report unchanged (a replayed
        result cannot create a duplicate), though a new checkpoint path is still attached:
        the replay's checkpoint is the one Ray keeps.
        """
        with self._scope() as session:
            trial = _locked_trial(session, trial_id)
            row = session.scalar(
                select(ReportRow).where(ReportRow.trial_id == trial_id, ReportRow.attempt == trial.attempt, ReportRow.epoch == epoch)
            )
            if row is None:
                row = ReportRow(trial_id=trial_id, attempt=trial.attempt, epoch=epoch, objective=objective, metrics=metrics)
                session.add(row)
                if objective is not None and (
                    trial.best_objective is None
                    or (objective > trial.best_objective if mode == "max" else objective < trial.best_objective)
                ):
                    trial.best_objective = objective
                session.flush()
            if checkpoint_path is not None:
                _attach(session, trial, row, checkpoint_path)
            return report_of(row)

    def attach_checkpoint(self, trial_id: int, *, path: str) -> None:
        """Attach a checkpoint to the trial's latest report (see :func:`_attach`)."""
        with self._scope() as session:
            trial = _locked_trial(session, trial_id)
            latest = session.scalar(
                select(ReportRow).where(ReportRow.trial_id == trial_id).order_by(ReportRow.attempt.desc(), ReportRow.epoch.desc()).limit(1)
            )
            _attach(session, trial, latest, path)

    def list_reports(self, study_id: int, trial_id: int, *, owner_id: int | None = None) -> list[Report]:
        with self._scope() as session:
            study_row(session, study_id, owner_id)
            trial = session.get(TrialRow, trial_id) if id_in_range(trial_id) else None
            if trial is None or trial.study_id != study_id:
                raise NotFoundError(f"trial {trial_id} not found in study {study_id}")
            rows = session.scalars(select(ReportRow).where(ReportRow.trial_id == trial_id).order_by(ReportRow.attempt, ReportRow.epoch))
            return [report_of(row) for row in rows]

    def best_trial(self, study_id: int, *, owner_id: int | None = None) -> tuple[Trial, Report] | None:
        """The trial whose best report has the best objective, with that report; None if
        no report has an objective yet. Ties go to the earlier trial, and within a trial to a
        report that still has its checkpoint (a tie makes the newer epoch the trial's
        checkpoint, and Ray's retention has deleted the older one's), then the earlier epoch."""
        with self._scope() as session:
            study = study_row(session, study_id, owner_id)
            mode = (study.spec.get("search") or {}).get("mode", "max")
            order = ReportRow.objective.desc() if mode == "max" else ReportRow.objective.asc()
            row = session.execute(
                select(ReportRow, TrialRow)
                .join(TrialRow, TrialRow.id == ReportRow.trial_id)
                .where(TrialRow.study_id == study_id, ReportRow.objective.is_not(None))
                .order_by(order, TrialRow.number, ReportRow.checkpoint_path.is_(None), ReportRow.epoch)
                .limit(1)
            ).first()
            if row is None:
                return None
            report_row, trial_row = row
            return trial_of(session, trial_row), report_of(report_row)


def _locked_trial(session: Session, trial_id: int) -> TrialRow:
    trial = session.get(TrialRow, trial_id, with_for_update=True)
    if trial is None:
        raise NotFoundError(f"trial {trial_id} not found")
    return trial


def _attach(session: Session, trial: TrialRow, report: ReportRow | None, path: str) -> None:
    """Attach a checkpoint to ``report``. It becomes the trial's own checkpoint (what the
    artifact is built from) only if that report is the trial's best."""
    if report is not None:
        report.checkpoint_path = path
    if report is None or report.objective is None or trial.checkpoint_path is None or report.objective == trial.best_objective:
        trial.checkpoint_path = path
    # Ray keeps only the latest and the best checkpoint of a trial; forget the others'
    # paths so no report points at a deleted folder.
    keep = {path, trial.checkpoint_path}
    session.execute(
        update(ReportRow)
        .where(ReportRow.trial_id == trial.id, ReportRow.checkpoint_path.is_not(None), ReportRow.checkpoint_path.not_in(keep))
        .values(checkpoint_path=None)
    )
