"""A user lists and revokes their own tokens; tokens may expire (issue 10, "Tokens")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from searchsvc.store.models import TokenRow
from tests.api.conftest import ApiUsers


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_create_list_and_revoke_own_tokens(api: ApiUsers) -> None:
    created = api.client.post("/v1/tokens", json={"label": "laptop", "expires_in_days": 30}, headers=api.alice)
    assert created.status_code == 201
    body = created.json()
    assert body["label"] == "laptop" and body["token"].startswith("ss_")
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=29, hours=23) < expires - datetime.now(UTC) <= timedelta(days=30)
    assert api.client.get("/v1/studies", headers=_bearer(body["token"])).status_code == 200

    listed = api.client.get("/v1/tokens", headers=api.alice).json()
    assert listed["count"] == 2 and [t["label"] for t in listed["data"]] == ["", "laptop"]
    assert all("token" not in t for t in listed["data"])  # secrets are never listed

    # bob neither sees nor revokes alice's tokens
    assert api.client.get("/v1/tokens", headers=api.bob).json()["count"] == 1
    assert api.client.delete(f"/v1/tokens/{body['id']}", headers=api.bob).status_code == 404
    assert api.client.get("/v1/studies", headers=_bearer(body["token"])).status_code == 200

    assert api.client.delete(f"/v1/tokens/{body['id']}", headers=api.alice).status_code == 204
    assert api.client.get("/v1/studies", headers=_bearer(body["token"])).status_code == 401
    assert api.client.delete(f"/v1/tokens/{body['id']}", headers=api.alice).status_code == 404
    assert api.client.delete("/v1/tokens/9223372036854775808", headers=api.alice).status_code == 404


def test_an_expired_token_is_refused(api: ApiUsers) -> None:
    body = api.client.post("/v1/tokens", json={"expires_in_days": 1}, headers=api.alice).json()
    assert api.client.get("/v1/studies", headers=_bearer(body["token"])).status_code == 200
    store = api.client.app.state.service.store  # type: ignore[attr-defined]
    with store.engine.begin() as conn:  # a day passes
        conn.execute(update(TokenRow).where(TokenRow.id == body["id"])
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    response = api.client.get("/v1/studies", headers=_bearer(body["token"]))
    assert response.status_code == 401 and response.json()["detail"] == "invalid or expired token"


def test_token_requests_are_validated(api: ApiUsers) -> None:
    for bad in ({"expires_in_days": 0}, {"expires_in_days": "5"}, {"label": "x" * 101}, {"surprise": 1}):
        assert api.client.post("/v1/tokens", json=bad, headers=api.alice).status_code == 422, bad
    assert api.client.post("/v1/tokens", headers=api.alice).status_code == 201  # no body: no label, no expiry
    assert api.client.post("/v1/tokens", json={}).status_code == 401
