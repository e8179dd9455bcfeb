"""Errors show one line in the API, the owner reads the full text on its own route; a
user's pending studies are bounded (issue 10, "Secrets and internals", "Fair sharing")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api import create_app
from searchsvc.config import Settings
from tests.api.conftest import ApiUsers

TRACEBACK = """Traceback (most recent call last):
  File "/opt/venv/lib/python3.11/site-packages/ray/tune/x.py", line 12, in run
    raise ValueError("the learning rate diverged")
ValueError: the learning rate diverged
(pid=1234, ip=10.0.0.7) log tail: /srv/searchsvc-data/ray_results/worker.log"""


def test_lists_show_one_line_and_the_owner_reads_the_whole_error(api: ApiUsers, minimal_spec: dict) -> None:
    store = api.client.app.state.service.store  # type: ignore[attr-defined]
    study = api.client.post("/v1/studies", json=minimal_spec, headers=api.alice).json()
    trial = store.start_trial(study["id"], ray_trial_id="r1", config={})
    store.retry_trial(trial.id, error=TRACEBACK)
    store.start_trial(study["id"], ray_trial_id="r1", config={})
    store.finish_trial(trial.id, "failed", error=TRACEBACK)
    store.finish_study(study["id"], "failed", error=f"all 1 trials failed; the first:\n{TRACEBACK}")

    listed = api.client.get(f"/v1/studies/{study['id']}/trials", headers=api.alice).json()["data"][0]
    assert listed["error"] == "ValueError: the learning rate diverged"
    assert [a["error"] for a in listed["attempts"]] == ["ValueError: the learning rate diverged"] * 2
    shown = api.client.get(f"/v1/studies/{study['id']}", headers=api.alice).json()
    assert shown["error"] == "ValueError: the learning rate diverged"
    assert "/opt/venv" not in str(listed) + str(shown)

    full = api.client.get(f"/v1/studies/{study['id']}/trials/{trial.id}/error", headers=api.alice)
    assert full.status_code == 200
    assert full.json()["error"] == TRACEBACK and [a["error"] for a in full.json()["attempts"]] == [TRACEBACK, TRACEBACK]
    assert api.client.get(f"/v1/studies/{study['id']}/trials/{trial.id}/error", headers=api.bob).status_code == 404


@pytest.fixture
def limited(database_url: str) -> Iterator[ApiUsers]:
    settings = Settings(database_url=database_url, allow_hub_models=True, max_pending_studies_per_user=2)
    app = create_app(settings, dispatch=False)
    with TestClient(app) as client:
        _, alice = app.state.service.store.issue_token("alice")
        _, bob = app.state.service.store.issue_token("bob")
        yield ApiUsers(client, {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"})


def test_pending_studies_per_user_are_bounded(limited: ApiUsers, minimal_spec: dict) -> None:
    first = limited.client.post("/v1/studies", json=minimal_spec, headers=limited.alice).json()
    assert limited.client.post("/v1/studies", json=minimal_spec, headers=limited.alice).status_code == 201
    refused = limited.client.post("/v1/studies", json=minimal_spec, headers=limited.alice)
    assert refused.status_code == 409 and "2 studies waiting" in refused.json()["detail"]
    assert limited.client.post("/v1/studies", json=minimal_spec, headers=limited.bob).status_code == 201  # bob is not held back
    limited.client.post(f"/v1/studies/{first['id']}/stop", headers=limited.alice)
    assert limited.client.post("/v1/studies", json=minimal_spec, headers=limited.alice).status_code == 201
