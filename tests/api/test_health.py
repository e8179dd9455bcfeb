"""/healthz needs no token, so it says whether the parts are up and nothing more."""

from __future__ import annotations

from tests.api.conftest import ApiUsers


def test_healthz_shows_no_addresses(api: ApiUsers) -> None:
    body = api.client.get("/healthz").json()
    assert body == {"status": "ok", "database": "ok", "ray": "off", "dispatcher": "off"}
