"""The SQL store: the system of record for users, studies, trials and reports.

:class:`Store` is one facade over five parts, each in its own module: accounts (users,
tokens), studies, trials, reports, datasets. Thread- and process-safety: a store may be shared by
threads (each call opens its own session), and several processes (API, dispatcher,
study runners) may open the same database; each method is one transaction. Rows never
leave the store: methods return the frozen types of :mod:`searchsvc.store.types`
(converted in :mod:`searchsvc.store._rows`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from searchsvc.errors import StoreUnavailableError
from searchsvc.redact import unmask_url
from searchsvc.store._accounts import TOKEN_PREFIX, AccountsStore, hash_token
from searchsvc.store._datasets import DatasetsStore
from searchsvc.store._reports import ReportsStore
from searchsvc.store._studies import StudiesStore
from searchsvc.store._trials import TrialsStore
from searchsvc.store.database import make_engine, migrate

__all__ = ["TOKEN_PREFIX", "Store", "hash_token"]

log = logging.getLogger("searchsvc.store")
_F = TypeVar("_F", bound=Callable[..., Any])


class Store(AccountsStore, StudiesStore, TrialsStore, ReportsStore, DatasetsStore):
    """All persistent state. Each method is one transaction and says what it raises."""

    #: How long a call keeps retrying while the database is unavailable before it raises
    #: StoreUnavailableError. 0 (the API's choice) fails at once, so a request answers 503
    #: instead of hanging; a study runner waits out an outage so no report or trial state
    #: it writes is lost (every write is idempotent under a retry: a report is stored once
    #: per trial, attempt and epoch, and a trial's end is written once).
    retry_unavailable_s: float = 0.0

    @classmethod
    def open(cls, url: str, *, apply_migrations: bool = True, retry_unavailable_s: float = 0.0) -> Store:
        """Connect to ``url`` and, by default, migrate its schema to the newest revision."""
        engine = make_engine(url)
        if apply_migrations:
            migrate(engine)
        store = cls(engine)
        store.retry_unavailable_s = retry_unavailable_s
        return store

    def close(self) -> None:
        self.engine.dispose()

    # Ray Tune pickles its callbacks (which hold a store) into its experiment state on
    # disk; a store travels as its URL with the password masked, and on arrival takes the
    # real URL from the process's configuration (see searchsvc.redact), reconnecting
    # without re-running migrations.
    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.engine.url.render_as_string(hide_password=True), "retry_unavailable_s": self.retry_unavailable_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(make_engine(unmask_url(state["url"])))  # type: ignore[misc]
        self.retry_unavailable_s = float(state.get("retry_unavailable_s", 0.0))


def _retrying(method: _F) -> _F:
    """``method``, retried with backoff (0.5 s doubling to 5 s) while the database is
    unavailable, for up to the store's ``retry_unavailable_s``. Each try is a fresh
    transaction: a failed one was rolled back whole."""

    @functools.wraps(method)
    def call(self: Store, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.retry_unavailable_s
        delay = 0.5
        while True:
            try:
                return method(self, *args, **kwargs)
            except StoreUnavailableError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("%s: %s; retrying in %.1f s", method.__name__, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    return call  # type: ignore[return-value]


# Every public operation of the store gets the same retry policy, written once here
# rather than in each part (a part's methods stay plain single transactions).
for _name in [n for n in dir(Store) if not n.startswith("_") and n not in ("open", "close", "retry_unavailable_s")]:
    if callable(getattr(Store, _name)) and not isinstance(Store.__dict__.get(_name), (classmethod, staticmethod)):
        setattr(Store, _name, _retrying(getattr(Store, _name)))
