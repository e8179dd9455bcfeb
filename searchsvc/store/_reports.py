"""Per-epoch reports (stored exactly once per trial, attempt and epoch) and checkpoints."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from searchsvc.errors import NotFoundError
from searchsvc.store._base import StoreBase
from searchsvc.store._rows import report_of, study_row, trial_of
from searchsvc.store.models import ReportRow, TrialRow
from searchsvc.store.types import Report, Trial


class ReportsStore(StoreBase):
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
                return report_of(existing)
            row = ReportRow(trial_id=trial_id, attempt=trial.attempt, epoch=epoch, objective=objective, metrics=metrics)
            session.add(row)
            if objective is not None and (
                trial.best_objective is None
                or (objective > trial.best_objective if mode == "max" else objective < trial.best_objective)
            ):
                trial.best_objective = objective
            session.flush()
            return report_of(row)

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
            study_row(session, study_id, owner_id)
            trial = session.get(TrialRow, trial_id)
            if trial is None or trial.study_id != study_id:
                raise NotFoundError(f"trial {trial_id} not found in study {study_id}")
            rows = session.scalars(select(ReportRow).where(ReportRow.trial_id == trial_id).order_by(ReportRow.attempt, ReportRow.epoch))
            return [report_of(row) for row in rows]

    def best_trial(self, study_id: int, *, owner_id: int | None = None) -> tuple[Trial, Report] | None:
        """The trial whose best report has the best objective, with that report; None if
        no report has an objective yet. Ties go to the earlier trial."""
        with self._scope() as session:
            study = study_row(session, study_id, owner_id)
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
            return trial_of(session, trial_row), report_of(report_row)
