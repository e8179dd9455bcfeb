"""Plain, immutable domain types the store hands out.

SQLAlchemy rows never leave :mod:`searchsvc.store`; callers get these dataclasses
instead, so the API, the dispatcher and the tests depend on our types, not on the ORM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

StudyState = Literal["pending", "running", "paused", "completed", "failed", "stopped"]
TrialState = Literal["pending", "running", "paused", "completed", "failed", "stopped"]

STUDY_STATES: tuple[str, ...] = ("pending", "running", "paused", "completed", "failed", "stopped")
TERMINAL_STUDY_STATES: frozenset[str] = frozenset({"completed", "failed", "stopped"})
TRIAL_STATES: tuple[str, ...] = ("pending", "running", "paused", "completed", "failed", "stopped")
UNFINISHED_TRIAL_STATES: tuple[str, ...] = ("pending", "running", "paused")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Token:
    """An API token as its owner sees it: never the secret (only its hash is stored)."""

    id: int
    user_id: int
    label: str
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class Study:
    id: int
    name: str
    owner: str
    owner_id: int
    state: StudyState
    spec: dict[str, Any]
    stop_requested: bool
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    ray_experiment: str | None = None
    dashboard_url: str | None = None
    control: str | None = None  # a pending request to the runner: "pause"
    artifact_path: str | None = None
    restarts: int = 0


@dataclass(frozen=True)
class Trial:
    id: int
    study_id: int
    number: int
    ray_trial_id: str
    state: TrialState
    config: dict[str, Any]
    attempt: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    checkpoint_path: str | None
    best_objective: float | None
    num_reports: int = 0
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class Attempt:
    """One run of a trial: the first, or a retry after the trial's worker failed."""

    attempt: int
    state: str
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Report:
    id: int
    trial_id: int
    attempt: int
    epoch: int
    objective: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoint_path: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class Dataset:
    """An uploaded task folder. ``folder`` is relative to the service's data root."""

    id: int
    owner_id: int
    name: str
    folder: str
    train_bytes: int
    dev_bytes: int
    meta_bytes: int
    train_rows: int
    dev_rows: int
    created_at: datetime

    @property
    def total_bytes(self) -> int:
        return self.train_bytes + self.dev_bytes + self.meta_bytes


@dataclass(frozen=True)
class TrialTally:
    """Where a study's trials stand: how many in each state, and the best objective so far."""

    counts: dict[str, int]
    best_objective: float | None
