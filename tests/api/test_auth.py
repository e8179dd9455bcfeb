"""Bearer auth and per-user isolation on every study route."""

from __future__ import annotations

import pytest

from tests.api.conftest import ApiUsers

ROUTES = [
    ("GET", "/v1/studies/{id}"),
    ("GET", "/v1/studies/{id}/trials"),
    ("GET", "/v1/studies/{id}/trials/1/reports"),
    ("GET", "/v1/studies/{id}/trials/1/error"),
    ("GET", "/v1/studies/{id}/best"),
    ("GET", "/v1/studies/{id}/artifact"),
    ("POST", "/v1/studies/{id}/stop"),
    ("POST", "/v1/studies/{id}/pause"),
    ("POST", "/v1/studies/{id}/resume"),
]


def test_no_token_and_bad_token_are_401(api: ApiUsers) -> None:
    for headers in ({}, {"Authorization": "Bearer ss_not-a-token"}, {"Authorization": "Basic abc"}):
        response = api.client.get("/v1/studies", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
    assert api.client.post("/v1/studies", json={}).status_code == 401


@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_other_users_study_is_404_everywhere(api: ApiUsers, minimal_spec: dict, method: str, route: str) -> None:
    study = api.client.post("/v1/studies", json=minimal_spec, headers=api.alice).json()
    response = api.client.request(method, route.format(id=study["id"]), headers=api.bob)
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]
    # ...and bob's attempt changed nothing for alice
    again = api.client.get(f"/v1/studies/{study['id']}", headers=api.alice).json()
    assert again["state"] == "pending" and not again["stop_requested"]
    assert api.client.get("/v1/studies", headers=api.bob).json() == {"data": [], "count": 0}


def test_owner_sees_and_stops_own_study(api: ApiUsers, minimal_spec: dict) -> None:
    study = api.client.post("/v1/studies", json=minimal_spec, headers=api.alice).json()
    assert study["owner"] == "alice" and study["state"] == "pending"
    listing = api.client.get("/v1/studies", headers=api.alice).json()
    assert listing["count"] == 1 and listing["data"][0]["id"] == study["id"]
    stopped = api.client.post(f"/v1/studies/{study['id']}/stop", headers=api.alice).json()
    assert stopped["state"] == "stopped"
    assert api.client.post(f"/v1/studies/{study['id']}/stop", headers=api.alice).status_code == 409
    assert api.client.get(f"/v1/studies/{study['id']}/best", headers=api.alice).status_code == 404


def test_metrics_can_require_the_operators_token(database_url: str) -> None:
    from fastapi.testclient import TestClient

    from api import create_app
    from searchsvc.config import Settings

    app = create_app(Settings(database_url=database_url, metrics_token="m-secret"), dispatch=False)
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert "searchsvc_studies" in client.get("/metrics", headers={"Authorization": "Bearer m-secret"}).text
        assert client.get("/healthz").status_code == 200


def test_health_metrics_and_docs_need_no_token(api: ApiUsers, minimal_spec: dict) -> None:
    api.client.post("/v1/studies", json=minimal_spec, headers=api.alice)
    assert api.client.get("/healthz").json()["database"] == "ok"
    text = api.client.get("/metrics").text
    assert 'searchsvc_studies{state="pending"} 1.0' in text
    assert api.client.get("/docs").status_code == 200
    assert "/v1/studies/{study_id}/artifact" in api.client.get("/openapi.json").json()["paths"]
