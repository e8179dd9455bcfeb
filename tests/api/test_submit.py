"""Submissions: a valid spec is stored pending; a rejected one names the field and writes nothing."""

from __future__ import annotations

import pytest

from tests.api.conftest import ApiUsers


def _count(api: ApiUsers) -> int:
    return api.client.get("/v1/studies", headers=api.alice).json()["count"]


@pytest.mark.parametrize(
    ("patch", "loc"),
    [
        ({"tasks": []}, "tasks"),
        ({"method": "nope"}, "method"),
        ({"search": {"num_trials": 0}}, "search.num_trials"),
        ({"search": {"space": {"lr": {"type": "loguniform", "low": 1, "high": 0.1}}}}, "search.space.lr"),
        ({"tasks": [{"name": "x", "path": "/no/such/folder"}]}, "tasks.0.path"),
        ({"surprise": True}, "surprise"),
        ({"search": {"num_trials": 4}}, "search.space"),  # nothing to search: refused at submission
        ({"search": {"space": {"method": {"type": "choice", "values": ["lora", "prefix"]},
                               "prefix_length": {"type": "int", "low": 2, "high": 9, "when": {"method": ["lora"]}}}}},
         "search.space.prefix_length.when.method"),
    ],
)
def test_rejected_spec_writes_nothing(api: ApiUsers, minimal_spec: dict, patch: dict, loc: str) -> None:
    before = _count(api)
    response = api.client.post("/v1/studies", json={**minimal_spec, **patch}, headers=api.alice)
    assert response.status_code == 422
    assert loc in [d["loc"] for d in response.json()["detail"]]
    assert _count(api) == before
    assert 'searchsvc_studies{state="pending"} 0.0' in api.client.get("/metrics").text


def test_valid_spec_is_stored_with_defaults(api: ApiUsers, minimal_spec: dict) -> None:
    response = api.client.post("/v1/studies", json=minimal_spec, headers=api.alice)
    assert response.status_code == 201
    body = response.json()
    assert body["spec"]["search"]["algorithm"] == "tpe"
    assert body["progress"] == {"total": 8, "pending": 0, "running": 0, "paused": 0, "completed": 0, "failed": 0, "stopped": 0,
                                "best_objective": None}
    fetched = api.client.get(f"/v1/studies/{body['id']}", headers=api.alice).json()
    assert fetched["spec"] == body["spec"]


def test_a_study_that_searches_the_method_is_stored(api: ApiUsers, minimal_spec: dict) -> None:
    space = {"method": {"type": "choice", "values": ["head", "lora", "peml"]},
             "lora_rank": {"type": "choice", "values": [4, 8]},
             "nas_cells": {"type": "int", "low": 1, "high": 3, "when": {"method": ["peml"]}}}
    response = api.client.post("/v1/studies", json={**minimal_spec, "search": {"space": space}}, headers=api.alice)
    assert response.status_code == 201, response.json()
    assert response.json()["spec"]["search"]["space"]["nas_cells"]["when"] == {"method": ["peml"]}
