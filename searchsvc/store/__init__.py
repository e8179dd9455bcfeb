"""The SQL store (SQLAlchemy 2 + Alembic). Public names only; the ORM stays private."""

from searchsvc.store.store import Store, hash_token
from searchsvc.store.types import (
    STUDY_STATES,
    TERMINAL_STUDY_STATES,
    TRIAL_STATES,
    Dataset,
    Report,
    Study,
    Token,
    Trial,
    TrialTally,
    User,
)

__all__ = [
    "STUDY_STATES", "TERMINAL_STUDY_STATES", "TRIAL_STATES",
    "Dataset", "Report", "Store", "Study", "Token", "Trial", "TrialTally", "User", "hash_token",
]
