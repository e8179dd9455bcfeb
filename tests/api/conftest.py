from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
def api(database_url: str, tmp_path: Path) -> Iterator[ApiUsers]:
    """The real app in-process on a real database, without Ray: studies stay pending.
    Specs may name hub ids (``some/model``: nothing is downloaded, nothing runs). Its data
    folder (and so the uploaded datasets' root) is the test's own."""
    settings = Settings(database_url=database_url, allow_hub_models=True, data_dir=tmp_path / "service-data")
    app = create_app(settings, dispatch=False)
    with TestClient(app) as client:
        store = app.state.service.store
        _, alice = store.issue_token("alice")
        _, bob = store.issue_token("bob")
        yield ApiUsers(client, {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"})
