"""Bad input gets a short 4xx, never amplification (issue 10, "Bad input").

Each test replays a request from the issue against the real app on SQLite and
PostgreSQL: a YAML alias bomb, non-JSON and oversized bodies, ids past the integer
range, NUL bytes, huge strings, quoted numbers, impossible resources, a broken database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api import create_app
from searchsvc.config import Settings
from searchsvc.errors import SpecError
from searchsvc.spec import parse_spec
from tests.api.conftest import ApiUsers

LIMIT = 64 * 1024


@pytest.fixture
def small(database_url: str) -> Iterator[ApiUsers]:
    """The app with a 64 KiB request limit."""
    app = create_app(Settings(database_url=database_url, allow_hub_models=True, max_request_bytes=LIMIT), dispatch=False)
    with TestClient(app) as client:
        _, alice = app.state.service.store.issue_token("alice")
        _, bob = app.state.service.store.issue_token("bob")
        yield ApiUsers(client, {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"})


def _alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    return "\n".join(lines) + f"\nname: *a{levels - 1}\n"


def test_yaml_alias_bomb_is_refused_without_expanding(api: ApiUsers) -> None:
    """The issue's 414-byte body answered 32 MB in 4.3 s; each level multiplies by 10."""
    bomb = _alias_bomb(9)  # 10**9 strings if expanded
    assert len(bomb) < 1000
    started = time.monotonic()
    response = api.client.post("/v1/studies", json=bomb, headers=api.alice)
    assert time.monotonic() - started < 2
    assert response.status_code == 422 and len(response.content) < 1000
    assert response.json()["detail"][0]["msg"].startswith("a study spec must be a JSON object")
    # the SDK and CLI read YAML themselves: there too, aliases are refused, not expanded
    with pytest.raises(SpecError, match="aliases"):
        parse_spec(bomb)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-yaml", "application/x-www-form-urlencoded", None])
def test_non_json_bodies_are_415(api: ApiUsers, minimal_spec: dict, content_type: str | None) -> None:
    import json

    headers = {**api.alice, **({"Content-Type": content_type} if content_type else {})}
    response = api.client.post("/v1/studies", content=json.dumps(minimal_spec), headers=headers)
    assert response.status_code == 415
    assert "JSON" in response.json()["detail"]
    ok = api.client.post("/v1/studies", content=json.dumps(minimal_spec),
                         headers={**api.alice, "Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 201


def test_oversized_bodies_are_413_declared_or_chunked(small: ApiUsers, minimal_spec: dict) -> None:
    import json

    big = json.dumps({**minimal_spec, "name": "n" * (LIMIT + 1)}).encode()
    response = small.client.post("/v1/studies", content=big, headers={**small.alice, "Content-Type": "application/json"})
    assert response.status_code == 413 and str(LIMIT) in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 4096):
            yield big[start:start + 4096]

    response = small.client.post("/v1/studies", content=chunks(), headers={**small.alice, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert small.client.get("/v1/studies", headers=small.alice).json()["count"] == 0
    # bodiless control routes are not affected
    assert small.client.post("/v1/studies/1/stop", headers=small.alice).status_code == 404


@pytest.mark.parametrize("study_id", ["9223372036854775808", "9223372036854775807", "2147483648", "0", "-1"])
def test_ids_out_of_range_are_404_on_every_route(api: ApiUsers, minimal_spec: dict, study_id: str) -> None:
    study = api.client.post("/v1/studies", json=minimal_spec, headers=api.alice).json()
    routes = [("GET", f"/v1/studies/{study_id}"), ("GET", f"/v1/studies/{study_id}/trials"),
              ("GET", f"/v1/studies/{study_id}/trials/1/reports"),
              ("GET", f"/v1/studies/{study['id']}/trials/{study_id}/reports"),
              ("GET", f"/v1/studies/{study_id}/best"), ("GET", f"/v1/studies/{study_id}/artifact"),
              ("POST", f"/v1/studies/{study_id}/stop"), ("POST", f"/v1/studies/{study_id}/pause"),
              ("POST", f"/v1/studies/{study_id}/resume")]
    for method, route in routes:
        response = api.client.request(method, route, headers=api.alice)
        assert response.status_code == 404, (route, response.status_code, response.text)


def test_a_database_failure_is_503_with_an_error_id_and_no_sql(api: ApiUsers, minimal_spec: dict) -> None:
    store = api.client.app.state.service.store  # type: ignore[attr-defined]
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE studies RENAME TO studies_gone"))
    response = api.client.get("/v1/studies", headers=api.alice)
    assert response.status_code == 503
    body = response.json()
    assert set(body) == {"detail", "error_id"} and len(body["error_id"]) == 12
    assert "SELECT" not in response.text and "studies" not in response.text


@pytest.mark.parametrize(
    ("patch", "loc"),
    [
        ({"search": {"num_trials": "5"}}, "search.num_trials"),
        ({"search": {"num_trials": True}}, "search.num_trials"),
        ({"search": {"max_concurrent": 2.0}}, "search.max_concurrent"),
        ({"name": "bad\u0000name"}, "name"),
        ({"tasks": [{"name": "t\u0000", "path": "/tmp"}]}, "tasks.0.name"),
        ({"name": "n" * 201}, "name"),
        ({"model": "m" * 5000}, "model"),
        ({"method": "x" * 9000}, "method"),
        ({"resources": {"cpu": 1000}}, "resources.cpu"),
        ({"resources": {"cpu": 0.01}}, "resources.cpu"),
        ({"resources": {"gpu": 100}}, "resources.gpu"),
        ({"resources": {"cpu": "1"}}, "resources.cpu"),
        ({"resources": {"custom": {f"r{i}": 1 for i in range(17)}}}, "resources.custom"),
        ({"extra": "e" * 20_000}, "extra"),
    ],
)
def test_bad_values_are_422_naming_the_field_without_echoing_it(api: ApiUsers, minimal_spec: dict, patch: dict, loc: str) -> None:
    spec = {**minimal_spec, **patch}
    response = api.client.post("/v1/studies", json=spec, headers=api.alice)
    assert response.status_code == 422, response.text
    assert loc in [p["loc"] for p in response.json()["detail"]]
    assert len(response.content) < 2000  # bounded, whatever the input's size
    assert "\u0000" not in response.text and "\\u0000" not in response.text
    assert api.client.get("/v1/studies", headers=api.alice).json()["count"] == 0


def test_nesting_and_volume_are_bounded(api: ApiUsers, minimal_spec: dict) -> None:
    deep: object = 1
    for _ in range(40):
        deep = {"d": deep}
    response = api.client.post("/v1/studies", json={**minimal_spec, "extra": deep}, headers=api.alice)
    assert response.status_code == 422 and "nested" in response.text
    wide = {**minimal_spec, "extra": list(range(30_000))}
    response = api.client.post("/v1/studies", json=wide, headers=api.alice)
    assert response.status_code == 422 and "more than" in response.text


def test_fastapi_own_validation_errors_have_our_shape(api: ApiUsers) -> None:
    response = api.client.get("/v1/studies/" + "9" * 50 + "x", headers=api.alice)
    assert response.status_code == 422
    assert response.json() == {"detail": [{"loc": "path.study_id", "msg": response.json()["detail"][0]["msg"]}]}
    assert "9999" not in response.text


def test_a_body_that_is_not_json_is_422(api: ApiUsers) -> None:
    for route in ("/v1/studies", "/v1/tokens"):
        response = api.client.post(route, content=b"\xff{", headers={**api.alice, "Content-Type": "application/json"})
        assert response.status_code == 422, (route, response.text)
        assert [p["loc"].split(".")[0] for p in response.json()["detail"]] == ["body"]
