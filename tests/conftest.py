from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from searchsvc.store import Store
from tests.utils.databases import BACKENDS, fresh_database
from tests.utils.tasks import write_task


@pytest.fixture(scope="session", autouse=True)
def allowed_paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' task folders and models live under pytest's temporary root: the
    operator setting ``SEARCHSVC_ALLOWED_PATHS`` allows it for every server a test starts
    (in-process or a ``searchsvc serve`` child, which inherits the environment)."""
    root = tmp_path_factory.getbasetemp().resolve()
    before = os.environ.get("SEARCHSVC_ALLOWED_PATHS")
    os.environ["SEARCHSVC_ALLOWED_PATHS"] = str(root)
    yield root
    if before is None:
        os.environ.pop("SEARCHSVC_ALLOWED_PATHS", None)
    else:
        os.environ["SEARCHSVC_ALLOWED_PATHS"] = before


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every test that takes this runs once on SQLite and once on PostgreSQL."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store.open(database_url)
    yield s
    s.close()


@pytest.fixture
def two_tasks(tmp_path: Path) -> list[dict]:
    data = tmp_path / "data"
    return [write_task(data, "senti", "single", seed=1), write_task(data, "pairs", "pair", seed=2)]


@pytest.fixture
def minimal_spec(two_tasks: list[dict]) -> dict:
    """The smallest spec a study can be submitted with: a study searches at least one dimension."""
    return {"name": "t", "model": "some/model", "tasks": two_tasks,
            "search": {"space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}}
