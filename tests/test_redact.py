"""The database password stays out of logs and of what Tune pickles to disk (issue 10,
"Secrets"). Real PostgreSQL: its trust authentication ignores the password, so a URL
with one connects, and the test can look for the password in every byte written."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest

from searchsvc.config import Settings
from searchsvc.dispatch.optuna_storage import make_optuna_storage
from searchsvc.redact import mask_url, unmask_url
from searchsvc.store import Store
from tests.utils.databases import fresh_postgres

SECRET = "s3cret-Pa55"


@pytest.fixture
def secret_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh PostgreSQL database reached with a password, configured as a runner's is."""
    with fresh_postgres() as url:
        with_password = url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")
        assert SECRET in with_password
        monkeypatch.setenv("SEARCHSVC_DATABASE_URL", with_password)
        yield with_password


def test_mask_url_hides_the_password_only() -> None:
    assert mask_url("postgresql://u:pw@db:5432/searchsvc") == "postgresql://u:***@db:5432/searchsvc"
    assert mask_url("sqlite:////srv/searchsvc.db") == "sqlite:////srv/searchsvc.db"
    assert Settings(database_url="postgresql+psycopg://u:pw@h/d").masked_database_url() == "postgresql+psycopg://u:***@h/d"


def test_unmask_takes_the_password_from_configuration_for_the_same_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCHSVC_DATABASE_URL", "postgresql://u:pw@db:5432/searchsvc")
    assert unmask_url("postgresql+psycopg://u:***@db:5432/searchsvc") == "postgresql://u:pw@db:5432/searchsvc"
    with pytest.raises(RuntimeError, match="must hold the password") as info:
        unmask_url("postgresql://u:***@other:5432/searchsvc")
    assert "pw" not in str(info.value).replace("password", "")
    monkeypatch.delenv("SEARCHSVC_DATABASE_URL")
    with pytest.raises(RuntimeError):
        unmask_url("postgresql://u:***@db:5432/searchsvc")


def test_a_pickled_store_holds_no_password_and_reconnects(secret_url: str) -> None:
    store = Store.open(secret_url)
    _, _token = store.issue_token("alice")
    data = pickle.dumps(store)
    store.close()
    assert SECRET.encode() not in data
    restored = pickle.loads(data)
    try:
        assert restored.get_or_create_user("alice").name == "alice"  # connected with the real password
    finally:
        restored.close()


def test_a_pickled_optuna_storage_holds_no_password_and_reconnects(secret_url: str) -> None:
    import optuna

    storage = make_optuna_storage(secret_url)
    optuna.create_study(storage=storage, study_name="s")
    data = pickle.dumps(storage)
    assert SECRET.encode() not in data
    restored = pickle.loads(data)
    assert [s.study_name for s in restored.get_all_studies()] == ["s"]
    restored.engine.dispose()
    storage.engine.dispose()

