"""Study routes under /v1. Thin: parse, call the service, return a schema."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import FileResponse

from api.deps import CurrentUser, ServiceDep
from api.schemas import BestOut, ListOut, ReportOut, StudyOut, TrialErrorOut, TrialOut, error_responses

router = APIRouter(prefix="/v1/studies", tags=["studies"], responses=error_responses(401, 404, 413, 415, 422, 503))


@router.post("", status_code=201, response_model=StudyOut, responses=error_responses(409))
def create_study(
    user: CurrentUser, service: ServiceDep, spec: Annotated[Any, Body(description="a study spec, see DESIGN.md")]
) -> StudyOut:
    return StudyOut.of(service.submit(user, spec))


@router.get("", response_model=ListOut[StudyOut])
def list_studies(user: CurrentUser, service: ServiceDep, state: Annotated[str | None, Query()] = None) -> ListOut[StudyOut]:
    views = service.list(user, state=state)
    return ListOut(data=[StudyOut.of(v) for v in views], count=len(views))


@router.get("/{study_id}", response_model=StudyOut)
def get_study(study_id: int, user: CurrentUser, service: ServiceDep) -> StudyOut:
    return StudyOut.of(service.get(user, study_id))


@router.get("/{study_id}/trials", response_model=ListOut[TrialOut])
def list_trials(study_id: int, user: CurrentUser, service: ServiceDep) -> ListOut[TrialOut]:
    trials = service.trials(user, study_id)
    return ListOut(data=[TrialOut.of(t) for t in trials], count=len(trials))


@router.get("/{study_id}/trials/{trial_id}/error", response_model=TrialErrorOut)
def trial_error(study_id: int, trial_id: int, user: CurrentUser, service: ServiceDep) -> TrialErrorOut:
    """The full error text of a failed trial and of each failed attempt (tracebacks, Ray's
    log tails), for its owner; elsewhere the API shows one line of each."""
    return TrialErrorOut.of(service.trial(user, study_id, trial_id))


@router.get("/{study_id}/trials/{trial_id}/reports", response_model=ListOut[ReportOut])
def list_reports(study_id: int, trial_id: int, user: CurrentUser, service: ServiceDep) -> ListOut[ReportOut]:
    reports = service.reports(user, study_id, trial_id)
    return ListOut(data=[ReportOut.of(r) for r in reports], count=len(reports))


@router.get("/{study_id}/best", response_model=BestOut)
def best_trial(study_id: int, user: CurrentUser, service: ServiceDep) -> BestOut:
    trial, report = service.best(user, study_id)
    return BestOut(objective=report.objective, trial=TrialOut.of(trial), report=ReportOut.of(report))


@router.post("/{study_id}/stop", response_model=StudyOut, responses=error_responses(409))
def stop_study(study_id: int, user: CurrentUser, service: ServiceDep) -> StudyOut:
    return StudyOut.of(service.stop(user, study_id))


@router.post("/{study_id}/pause", response_model=StudyOut, responses=error_responses(409))
def pause_study(study_id: int, user: CurrentUser, service: ServiceDep) -> StudyOut:
    """Pause: running trials are interrupted and kept resumable from their last checkpoint."""
    return StudyOut.of(service.pause(user, study_id))


@router.post("/{study_id}/resume", response_model=StudyOut, responses=error_responses(409))
def resume_study(study_id: int, user: CurrentUser, service: ServiceDep) -> StudyOut:
    return StudyOut.of(service.resume(user, study_id))


@router.get("/{study_id}/artifact", response_class=FileResponse)
def download_artifact(study_id: int, user: CurrentUser, service: ServiceDep) -> FileResponse:
    """The study's adapter as a .tar.gz: after the study ends, the exported artifact (LoRA
    merged into the base model, the discretized prefix, task heads, and the unmerged PEFT
    adapter); before that, the best trial's best checkpoint so far."""
    path, filename = service.artifact(user, study_id)
    return FileResponse(path, media_type="application/gzip", filename=filename)
