"""A bounded schemathesis run over every operation (issue 10, "The API contract"): no
server errors, and every answer's status and body are the ones the OpenAPI declares.

The app runs in-process on SQLite without a dispatcher, so generated studies are stored
and never trained; task folders and models are confined to an empty root.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app
from searchsvc.config import Settings

_ROOT = Path(tempfile.mkdtemp(prefix="searchsvc-schemathesis-"))
(_ROOT / "allowed").mkdir()
APP = create_app(
    Settings(database_url=f"sqlite:///{_ROOT / 'db.sqlite'}", data_dir=_ROOT / "data", allowed_paths=str(_ROOT / "allowed"),
             max_pending_studies_per_user=1_000_000),
    dispatch=False,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def token() -> Iterator[str]:
    with TestClient(APP):  # runs the lifespan: the store lives on APP.state until the module ends
        _, secret = APP.state.service.store.issue_token("fuzzer")
        yield secret
    shutil.rmtree(_ROOT, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_declared(case, token: str) -> None:  # type: ignore[no-untyped-def]
    # What the issue measured: server errors, undocumented statuses, bodies off their schema.
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=checks)
