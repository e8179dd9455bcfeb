"""Where Optuna keeps the TPE history of a study, next to our own tables.

Optuna's schema has tables named ``studies`` and ``trials`` too, so it cannot share our
namespace: on PostgreSQL it lives in the schema ``optuna`` of the same database, on
SQLite in a sibling file (``searchsvc.db`` -> ``searchsvc-optuna.db``). Either way
``optuna-dashboard <url>`` opens it, and the sampler's history survives a restart.

The storage rides out a database outage the way the study runner's store does: a call
that finds the database unreachable is retried with backoff (up to
``retry_unavailable_s``), so the searcher neither loses a trial's value nor brings the
study down with it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import optuna
from sqlalchemy.engine import make_url

from searchsvc.redact import mask_url, unmask_url
from searchsvc.store.database import is_unavailable

log = logging.getLogger("searchsvc.optuna_storage")

OPTUNA_SCHEMA = "optuna"


class MaskedRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage, pickled (inside Tune's searcher state, on disk) without the
    database password: the URL goes out masked and comes back from configuration."""

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["url"] = mask_url(state["url"])
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__({**state, "url": _unmask_optuna_url(state["url"])})


def _unmask_optuna_url(masked: str) -> str:
    """The Optuna URL of the configured database, if ``masked`` is its masked form."""
    if make_url(masked).password is None:
        return masked  # SQLite: nothing was masked
    real, _ = optuna_storage_url(unmask_url(masked))  # PostgreSQL: our database, another schema
    return real


def optuna_storage_url(database_url: str) -> tuple[str, dict[str, Any]]:
    """``(url, engine_kwargs)`` for Optuna's ``RDBStorage`` beside ``database_url``."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:"):
            return "sqlite:///:memory:", {}
        stem = database[: -len(".db")] if database.endswith(".db") else database
        return url.set(database=f"{stem}-optuna.db").render_as_string(hide_password=False), {}
    if url.get_backend_name() == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return url.render_as_string(hide_password=False), {"connect_args": {"options": f"-c search_path={OPTUNA_SCHEMA}"}}
    return url.render_as_string(hide_password=False), {}


def _unavailable(exc: BaseException) -> bool:
    """Optuna wraps the database's error in StorageInternalError (or lets it through)."""
    return is_unavailable(exc) or (isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None
                                   and is_unavailable(exc.__cause__))


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.retry_unavailable_s
        delay = 0.5
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                if not _unavailable(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("optuna storage %s: the database is unavailable; retrying in %.1f s", method.__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    return call


class RetryingRDBStorage(MaskedRDBStorage):
    """Optuna's RDBStorage whose every storage call is retried while the database is
    unreachable (and which, pickled, carries no password: :class:`MaskedRDBStorage`)."""

    def __init__(self, url: str, *, engine_kwargs: dict[str, Any] | None = None, retry_unavailable_s: float = 0.0) -> None:
        self.retry_unavailable_s = retry_unavailable_s
        super().__init__(url, engine_kwargs=engine_kwargs)


for _name in [n for n in vars(optuna.storages.BaseStorage) if not n.startswith("_") and n != "remove_session"]:
    if callable(getattr(optuna.storages.RDBStorage, _name, None)):
        setattr(RetryingRDBStorage, _name, _retrying(getattr(optuna.storages.RDBStorage, _name)))


def make_optuna_storage(database_url: str, *, retry_unavailable_s: float = 0.0) -> RetryingRDBStorage:
    """An Optuna RDBStorage beside our database (creating the PostgreSQL schema if needed)."""
    from sqlalchemy import create_engine, text

    url, engine_kwargs = optuna_storage_url(database_url)
    if engine_kwargs:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
        engine.dispose()
    return RetryingRDBStorage(url, engine_kwargs=engine_kwargs, retry_unavailable_s=retry_unavailable_s)
