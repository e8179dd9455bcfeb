"""GET /v1/studies/{id}/plots/{kind} through the real app: owner only, PNG or SVG, clear 4xx."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from searchsvc.plots import PLOT_KINDS, SIZES
from tests.api.conftest import ApiUsers
from tests.utils.study_factory import build_study


def _store(api: ApiUsers):  # type: ignore[no-untyped-def]
    return api.client.app.state.service.store  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", list(PLOT_KINDS))
def test_owner_gets_each_kind_others_get_404(api: ApiUsers, two_tasks: list[dict[str, Any]], kind: str) -> None:
    study = build_study(_store(api), "alice", two_tasks, running=True)
    response = api.client.get(f"/v1/studies/{study.id}/plots/{kind}", headers=api.alice)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "no-store"
    assert Image.open(io.BytesIO(response.content)).size == SIZES[kind]
    other = api.client.get(f"/v1/studies/{study.id}/plots/{kind}", headers=api.bob)
    assert other.status_code == 404 and "not found" in other.json()["detail"]
    assert api.client.get(f"/v1/studies/{study.id}/plots/{kind}").status_code == 401


def test_unknown_kind_is_422_naming_the_kinds(api: ApiUsers, two_tasks: list[dict[str, Any]]) -> None:
    study = build_study(_store(api), "alice", two_tasks)
    response = api.client.get(f"/v1/studies/{study.id}/plots/pie", headers=api.alice)
    assert response.status_code == 422
    assert response.json()["detail"] == [{"loc": "kind", "msg": f"unknown plot kind 'pie'; known: {', '.join(PLOT_KINDS)}"}]
    assert api.client.get(f"/v1/studies/{study.id}/plots/pie", headers=api.bob).status_code == 404


def test_svg_trial_and_missing_trial(api: ApiUsers, two_tasks: list[dict[str, Any]]) -> None:
    study = build_study(_store(api), "alice", two_tasks)
    svg = api.client.get(f"/v1/studies/{study.id}/plots/coordination", params={"format": "svg", "trial": 1}, headers=api.alice)
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert b"trial #1" in svg.content
    missing = api.client.get(f"/v1/studies/{study.id}/plots/alpha", params={"trial": 7}, headers=api.alice)
    assert missing.status_code == 404 and "no trial #7" in missing.json()["detail"]
    assert "/v1/studies/{study_id}/plots/{kind}" in api.client.get("/openapi.json").json()["paths"]
