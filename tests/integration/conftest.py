"""A real server (``searchsvc serve`` in a subprocess, a local Ray, a real database) per backend."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from searchsvc.client import Client
from searchsvc.local_server import LocalServer, free_port
from searchsvc.store import Store
from tests.utils.databases import BACKENDS, fresh_database
from tests.utils.tasks import all_words, write_task


@dataclass
class LiveService:
    server: LocalServer
    client: Client
    store: Store
    tasks: list[dict]
    model: str


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    from workers.tiny import build_tiny_model

    path = tmp_path_factory.mktemp("tiny-bert")
    build_tiny_model(path, family="bert", texts=all_words())
    return str(path)


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> Iterator[LiveService]:
    root = tmp_path_factory.mktemp(f"live-{request.param}")
    tasks = [write_task(root / "data", "senti", "single", seed=1), write_task(root / "data", "pairs", "pair", seed=2)]
    with fresh_database(request.param, root) as url:
        store = Store.open(url)
        _, token = store.issue_token("tester")
        server = LocalServer(database_url=url, data_dir=root / "data-dir", ray_num_cpus=2, dashboard_port=free_port())
        with server, Client(server.url, token) as client:
            yield LiveService(server, client, store, tasks, tiny_bert)
        store.close()


def study_spec(live: LiveService, **overrides: object) -> dict:
    spec: dict = {
        "name": "integration",
        "model": live.model,
        "tasks": live.tasks,
        "method": "lora+prefix",
        "search": {
            "algorithm": "tpe",
            "num_trials": 4,
            "max_concurrent": 2,
            "seed": 0,
            "space": {
                "lr": {"type": "loguniform", "low": 1e-3, "high": 5e-2},
                "prefix_length": {"type": "int", "low": 2, "high": 8},
                "lora_rank": {"type": "choice", "values": [2, 4]},
            },
        },
        "train": {"max_epochs": 2, "patience": 2, "batch_size": 8, "max_seq_len": 16, "seed": 0},
        "resources": {"cpu": 1},
    }
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    return spec


def dump_on_failure(live: LiveService) -> str:
    logs = sorted((live.server.data_dir / "logs").glob("*.log"))
    text = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in logs)
    return f"server log:\n{live.server.log_tail()}\n{text}"

