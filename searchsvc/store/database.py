"""Engine creation, the one session scope, and schema migration.

Every store operation runs inside :func:`session_scope`, which commits on success, rolls
back on any error and turns database errors into :class:`~searchsvc.errors.StoreError`,
so a failed write never leaves half a change behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from searchsvc.errors import SearchsvcError, StoreError, StoreUnavailableError

_MIGRATIONS = Path(__file__).parent / "migrations"
_POOL_SIZE = 40  # AnyIO's default thread limit, which FastAPI's sync routes share


def make_engine(url: str) -> Engine:
    """An engine tuned for several processes sharing one database.

    The API, the dispatcher and every study runner write to the same database; for
    SQLite that means WAL mode (readers never block the writer) and a generous busy
    timeout instead of "database is locked" errors.

    The pool keeps as many connections as the API has worker threads (FastAPI runs sync
    routes on AnyIO's 40 threads): with fewer, busy threads queue for a connection, and
    connections beyond the pool are opened and closed per request (for SQLite that means
    re-running the pragmas every time).
    """
    pool = {"pool_size": _POOL_SIZE, "max_overflow": 10}
    if url.startswith("sqlite"):
        in_memory = url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:") or ":memory:" in url
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, **({} if in_memory else pool))

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True, **pool)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema up to the newest revision (idempotent; safe on every start)."""
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def schema_is_current(engine: Engine) -> bool:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Commit on success, roll back on error; database errors become StoreError, and
    StoreUnavailableError when the database cannot be reached (worth retrying)."""
    session = factory()
    try:
        yield session
        session.commit()
    except SearchsvcError:
        session.rollback()
        raise
    except SQLAlchemyError as exc:
        _rollback_quietly(session)
        if is_unavailable(exc):
            reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["no reason given"])[0]
            raise StoreUnavailableError(f"the database is unavailable, try again shortly ({reason})") from exc
        raise StoreError(f"database error: {exc.__class__.__name__}: {exc}") from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# PostgreSQL SQLSTATE classes that mean "not reachable now", not "this request is wrong":
# 08 connection exception, 57P admin shutdown / crash shutdown / cannot connect now.
_UNAVAILABLE_SQLSTATES = ("08", "57P")


def is_unavailable(exc: BaseException) -> bool:
    """Whether a database error means the database cannot be reached (or, for SQLite,
    is locked) rather than that the statement is wrong: only the former is worth retrying."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    module = type(orig).__module__
    if module.startswith("psycopg"):
        import psycopg

        if isinstance(orig, psycopg.InterfaceError):
            return True
        return isinstance(orig, psycopg.OperationalError) and (sqlstate is None or sqlstate.startswith(_UNAVAILABLE_SQLSTATES))
    if module == "sqlite3":
        return "locked" in str(orig) or "busy" in str(orig)
    return False


def _rollback_quietly(session: Session) -> None:
    """Roll back; with the connection gone a rollback fails too, and that must not hide why."""
    try:
        session.rollback()
    except SQLAlchemyError:
        pass
