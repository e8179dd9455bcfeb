"""Keeping the database password out of logs, messages and pickles.

The database URL carries the password. It is printed only masked (``***``), and what
Ray Tune pickles into its experiment state on disk (callbacks and stoppers that hold a
store, Optuna's storage) carries the masked URL only: on the way back in, the process
takes the real URL from its configuration (``SEARCHSVC_DATABASE_URL``, which the
dispatcher gives every runner), after checking it names the same database.
"""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DATABASE_URL_ENV = "SEARCHSVC_DATABASE_URL"


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (unchanged if it has none)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<a database URL that does not parse>"


def _identity(url: str) -> tuple[object, ...]:
    """What names a database, whatever the driver: backend, user, host, port, name."""
    parsed = make_url(url)
    return parsed.get_backend_name(), parsed.username, parsed.host, parsed.port, parsed.database


def unmask_url(masked: str) -> str:
    """The real URL for ``masked``, from ``SEARCHSVC_DATABASE_URL``.

    Raises RuntimeError if the masked URL had a password and the configured URL is
    missing or names another database (backend, user, host, port or name differ). Drivers may differ
    (``postgresql://`` and ``postgresql+psycopg://``); the configured URL is returned."""
    if make_url(masked).password is None:
        return masked
    configured = os.environ.get(DATABASE_URL_ENV, "")
    if configured and _identity(configured) == _identity(masked):
        return configured
    raise RuntimeError(
        f"{DATABASE_URL_ENV} must hold the password of the database {masked}: it is not stored on disk"
    )
