"""Where Optuna keeps the TPE history of a study, next to our own tables.

Optuna's schema has tables named ``studies`` and ``trials`` too, so it cannot share our
namespace: on PostgreSQL it lives in the schema ``optuna`` of the same database, on
SQLite in a sibling file (``searchsvc.db`` -> ``searchsvc-optuna.db``). Either way
``optuna-dashboard <url>`` opens it, and the sampler's history survives a restart.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url

OPTUNA_SCHEMA = "optuna"


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


def make_optuna_storage(database_url: str):  # type: ignore[no-untyped-def]
    """An Optuna RDBStorage beside our database (creating the PostgreSQL schema if needed)."""
    import optuna
    from sqlalchemy import create_engine, text

    url, engine_kwargs = optuna_storage_url(database_url)
    if engine_kwargs:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
        engine.dispose()
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
