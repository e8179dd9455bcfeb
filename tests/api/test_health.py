"""/healthz needs no token, so it says whether the parts are up and nothing more."""

from __future__ import annotations

from tests.api.conftest import ApiUsers


def test_healthz_shows_no_addresses(api: ApiUsers) -> None:
    body = api.client.get("/healthz").json()
    assert body == {"status": "ok", "database": "ok", "ray": "off", "dispatcher": "off"}


def test_openapi_declares_the_error_statuses_with_their_bodies(api: ApiUsers) -> None:
    spec = api.client.get("/openapi.json").json()
    create = spec["paths"]["/v1/studies"]["post"]["responses"]
    assert {"401", "404", "409", "413", "415", "422", "503"} <= set(create)
    assert create["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ProblemsOut")
    assert create["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    # and the bodies the app really sends match them
    problems = api.client.post("/v1/studies", json={"name": 1}, headers=api.alice).json()
    assert set(problems) == {"detail"} and all(set(p) == {"loc", "msg"} for p in problems["detail"])
    assert set(api.client.get("/v1/studies/1", headers=api.alice).json()) == {"detail"}
