"""The store when PostgreSQL cannot be reached: a clear StoreUnavailableError at once, or,
for a study runner's store, the same call waiting the outage out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from searchsvc.errors import StoreError, StoreUnavailableError
from searchsvc.spec import parse_spec
from searchsvc.store import Store
from tests.utils.databases import fresh_postgres
from tests.utils.tcp_proxy import TcpProxy


@pytest.fixture
def proxied() -> Iterator[tuple[str, TcpProxy]]:
    with fresh_postgres() as url:
        direct = make_url(url)
        proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432).start()
        Store.open(url).close()  # migrated directly
        yield direct.set(port=proxy.port).render_as_string(hide_password=False), proxy
        proxy.close()


def test_an_unreachable_database_is_unavailable_not_a_bug(proxied: tuple[str, TcpProxy], minimal_spec: dict) -> None:
    url, proxy = proxied
    store = Store.open(url, apply_migrations=False)
    owner, _ = store.issue_token("alice")
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="the database is unavailable, try again shortly"):
        store.list_studies(owner_id=owner.id)
    assert time.monotonic() - started < 5  # the API's store answers at once (503), it does not hang
    proxy.restore()
    assert store.list_studies(owner_id=owner.id) == []  # and recovers by itself
    with pytest.raises(StoreError) as wrong:  # a wrong statement is no outage: not worth a retry
        with store._scope() as session:
            session.execute(text("SELECT * FROM no_such_table"))
    assert not isinstance(wrong.value, StoreUnavailableError)
    store.close()


def test_a_runners_store_waits_the_outage_out(proxied: tuple[str, TcpProxy], minimal_spec: dict) -> None:
    url, proxy = proxied
    store = Store.open(url, apply_migrations=False, retry_unavailable_s=30)
    owner, _ = store.issue_token("alice")
    study = store.create_study(owner.id, parse_spec(minimal_spec))
    trial = store.start_trial(study.id, ray_trial_id="r", config={})
    proxy.cut()
    threading.Timer(3, proxy.restore).start()
    started = time.monotonic()
    store.add_report(trial.id, epoch=1, objective=0.5, metrics={})  # written once the database is back
    assert time.monotonic() - started >= 2.5
    assert [r.epoch for r in store.list_reports(study.id, trial.id)] == [1]
    store.close()
