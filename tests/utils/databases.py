"""Test databases: a fresh SQLite file, or a fresh PostgreSQL database that is dropped after.

PostgreSQL is reached at ``SEARCHSVC_TEST_POSTGRES`` (default: the local server at
127.0.0.1:5432 with trust auth). A test run never touches an existing database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ADMIN_URL = os.environ.get("SEARCHSVC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgresql")


@contextmanager
def fresh_postgres() -> Iterator[str]:
    import psycopg

    name = f"searchsvc_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(backend: str, tmp_dir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_dir / 'searchsvc-test.db'}"
    elif backend == "postgresql":
        with fresh_postgres() as url:
            yield url
    else:
        raise ValueError(backend)
