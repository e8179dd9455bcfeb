"""What every part of the store shares: one engine and one session scope per call."""

from __future__ import annotations

from contextlib import AbstractContextManager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from searchsvc.store.database import session_scope


class StoreBase:
    """Holds the engine; each public store method is one :meth:`_scope` (one transaction)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _scope(self) -> AbstractContextManager[Session]:
        return session_scope(self._sessions)


