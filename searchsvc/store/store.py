"""The SQL store: the system of record for users, studies, trials and reports.

:class:`Store` is one facade over four parts, each in its own module: accounts (users,
tokens), studies, trials, reports. Thread- and process-safety: a store may be shared by
threads (each call opens its own session), and several processes (API, dispatcher,
study runners) may open the same database; each method is one transaction. Rows never
leave the store: methods return the frozen types of :mod:`searchsvc.store.types`
(converted in :mod:`searchsvc.store._rows`).
"""

from __future__ import annotations

from searchsvc.redact import unmask_url
from searchsvc.store._accounts import TOKEN_PREFIX, AccountsStore, hash_token
from searchsvc.store._reports import ReportsStore
from searchsvc.store._studies import StudiesStore
from searchsvc.store._trials import TrialsStore
from searchsvc.store.database import make_engine, migrate

__all__ = ["TOKEN_PREFIX", "Store", "hash_token"]


class Store(AccountsStore, StudiesStore, TrialsStore, ReportsStore):
    """All persistent state. Each method is one transaction and says what it raises."""

    @classmethod
    def open(cls, url: str, *, apply_migrations: bool = True) -> Store:
        """Connect to ``url`` and, by default, migrate its schema to the newest revision."""
        engine = make_engine(url)
        if apply_migrations:
            migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # Ray Tune pickles its callbacks (which hold a store) into its experiment state on
    # disk; a store travels as its URL with the password masked, and on arrival takes the
    # real URL from the process's configuration (see searchsvc.redact), reconnecting
    # without re-running migrations.
    def __getstate__(self) -> dict[str, str]:
        return {"url": self.engine.url.render_as_string(hide_password=True)}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(make_engine(unmask_url(state["url"])))  # type: ignore[misc]
