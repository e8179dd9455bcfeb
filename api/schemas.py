"""Response schemas, separate from the store's types (which they are built from)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from searchsvc.errors import summarize
from searchsvc.model_registry import RegisteredModel
from searchsvc.service import StudyView
from searchsvc.store import Dataset, Report, Token, Trial

T = TypeVar("T")


class ErrorOut(BaseModel):
    """Every error answer but 422: a short message; ``error_id`` (500, 503) finds the full
    text in the server's log."""

    detail: str
    error_id: str | None = None


class ProblemOut(BaseModel):
    loc: str = Field(description="the field's path, e.g. search.space.lr.low")
    msg: str


class ProblemsOut(BaseModel):
    """A 422: every problem of the request, each naming its field."""

    detail: list[ProblemOut]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route answers, with their real bodies."""
    text = {401: "missing, unknown or expired token", 404: "no such object, or not yours", 409: "conflicts with its state",
            413: "request body too large", 415: "request body is not JSON", 422: "invalid request",
            503: "database unavailable"}
    return {code: {"model": ProblemsOut if code == 422 else ErrorOut, "description": text[code]} for code in codes}


class ListOut(BaseModel, Generic[T]):
    data: list[T]
    count: int


class ProgressOut(BaseModel):
    total: int
    pending: int
    running: int
    paused: int
    completed: int
    failed: int
    stopped: int
    best_objective: float | None


class AttemptOut(BaseModel):
    attempt: int
    state: str
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


class StudyOut(BaseModel):
    id: int
    name: str
    state: str
    owner: str
    spec: dict[str, Any]
    stop_requested: bool
    error: str | None
    ray_experiment: str | None
    dashboard_url: str | None
    control: str | None
    restarts: int
    progress: ProgressOut
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, view: StudyView) -> StudyOut:
        s, p = view.study, view.progress
        return cls(
            id=s.id, name=s.name, state=s.state, owner=s.owner, spec=_public_spec(s.spec), stop_requested=s.stop_requested,
            error=summarize(s.error) if s.error else None, ray_experiment=s.ray_experiment, dashboard_url=s.dashboard_url,
            control=s.control, restarts=s.restarts,
            progress=ProgressOut(total=p.total, best_objective=p.best_objective, **p.counts),
            created_at=s.created_at, updated_at=s.updated_at, started_at=s.started_at, finished_at=s.finished_at,
        )


def _public_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The stored spec as its owner wrote it: a task named by dataset shows the dataset,
    not the folder on the server it was resolved to."""
    tasks = spec.get("tasks")
    if not isinstance(tasks, list):
        return spec
    shown = [{k: v for k, v in task.items() if k != "path"} if isinstance(task, dict) and task.get("dataset") is not None
             else task for task in tasks]
    return {**spec, "tasks": shown}


class TrialOut(BaseModel):
    id: int
    number: int
    state: str
    config: dict[str, Any]
    attempt: int
    error: str | None
    best_objective: float | None
    num_reports: int
    checkpoint_path: str | None
    ray_trial_id: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, t: Trial) -> TrialOut:
        duration = (t.finished_at - t.started_at).total_seconds() if t.started_at and t.finished_at else None
        return cls(
            id=t.id, number=t.number, state=t.state, config=t.config, attempt=t.attempt,
            error=summarize(t.error) if t.error else None,
            best_objective=t.best_objective, num_reports=t.num_reports, checkpoint_path=t.checkpoint_path,
            ray_trial_id=t.ray_trial_id, created_at=t.created_at, started_at=t.started_at,
            finished_at=t.finished_at, duration_s=duration,
            attempts=[AttemptOut(attempt=a.attempt, state=a.state, error=summarize(a.error) if a.error else None,
                                 started_at=a.started_at,
                                 finished_at=a.finished_at) for a in t.attempts],
        )


class AttemptErrorOut(BaseModel):
    attempt: int
    state: str
    error: str | None


class TrialErrorOut(BaseModel):
    trial_id: int
    state: str
    error: str | None
    attempts: list[AttemptErrorOut]

    @classmethod
    def of(cls, t: Trial) -> TrialErrorOut:
        return cls(trial_id=t.id, state=t.state, error=t.error,
                   attempts=[AttemptErrorOut(attempt=a.attempt, state=a.state, error=a.error) for a in t.attempts])


class ReportOut(BaseModel):
    id: int
    trial_id: int
    attempt: int
    epoch: int
    objective: float | None
    metrics: dict[str, Any]
    checkpoint_path: str | None
    created_at: datetime | None

    @classmethod
    def of(cls, r: Report) -> ReportOut:
        return cls(
            id=r.id, trial_id=r.trial_id, attempt=r.attempt, epoch=r.epoch, objective=r.objective,
            metrics=r.metrics, checkpoint_path=r.checkpoint_path, created_at=r.created_at,
        )


class BestOut(BaseModel):
    objective: float | None
    trial: TrialOut
    report: ReportOut


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    label: str = Field("", max_length=100, pattern=r"^[^\x00]*$", description="your name for it, e.g. 'laptop'")
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="unset: the token does not expire")


class TokenOut(BaseModel):
    id: int
    label: str
    created_at: datetime
    expires_at: datetime | None

    @classmethod
    def of(cls, t: Token) -> TokenOut:
        return cls(id=t.id, label=t.label, created_at=t.created_at, expires_at=t.expires_at)


class TokenCreatedOut(TokenOut):
    token: str = Field(description="the secret, shown once: send it as 'Authorization: Bearer <token>'")


class ModelOut(BaseModel):
    """A model the operator offers; a spec names it by ``id``. Its folder stays on the server."""

    id: str = Field(description="what a spec's `model` names")
    family: str | None = Field(description="the model's type from its config.json (bert, t5, llama, ...), if known")
    description: str | None

    @classmethod
    def of(cls, m: RegisteredModel) -> ModelOut:
        return cls(id=m.id, family=m.family, description=m.description)


class DatasetOut(BaseModel):
    """An uploaded task folder: its files' sizes (bytes) and row counts, never its location."""

    id: int
    name: str
    owner: str
    train_rows: int
    dev_rows: int
    train_bytes: int
    dev_bytes: int
    meta_bytes: int
    total_bytes: int
    created_at: datetime

    @classmethod
    def of(cls, d: Dataset, *, owner: str) -> DatasetOut:
        return cls(id=d.id, name=d.name, owner=owner, train_rows=d.train_rows, dev_rows=d.dev_rows,
                   train_bytes=d.train_bytes, dev_bytes=d.dev_bytes, meta_bytes=d.meta_bytes, total_bytes=d.total_bytes,
                   created_at=d.created_at)
