from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from api import create_app
from searchsvc.config import Settings


@dataclass
class ApiUsers:
    client: TestClient
    alice: dict[str, str]
    bob: dict[str, str]


@pytest.fixture
def api(database_url: str) -> Iterator[ApiUsers]:
    """The real app in-process on a real database, without Ray: studies stay pending.
    Specs may name hub ids (``some/model``: nothing is downloaded, nothing runs)."""
    app = create_app(Settings(database_url=database_url, allow_hub_models=True), dispatch=False)
    with TestClient(app) as client:
        store = app.state.service.store
        _, alice = store.issue_token("alice")
        _, bob = store.issue_token("bob")
        yield ApiUsers(client, {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"})
