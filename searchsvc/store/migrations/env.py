"""Alembic environment: runs migrations on the connection searchsvc hands in.

searchsvc applies migrations itself at start-up (``searchsvc.store.database.migrate``),
passing its own connection in ``config.attributes["connection"]``. Run by the alembic
CLI instead, it reads the URL from ``SEARCHSVC_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from searchsvc.store.models import Base

target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = os.environ.get("SEARCHSVC_DATABASE_URL", "sqlite:///searchsvc.db")
    with create_engine(url).connect() as conn:
        _run(conn)
