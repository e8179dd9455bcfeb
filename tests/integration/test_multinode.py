"""The service on an existing two-node Ray cluster: trials land where their resources are."""

from __future__ import annotations

from pathlib import Path

import pytest

from searchsvc.client import Client
from searchsvc.local_server import LocalServer
from searchsvc.store import Store
from tests.integration.conftest import LiveService, dump_on_failure, study_spec
from tests.utils.ray_cluster import RAY_ENV, LocalRayCluster
from tests.utils.tasks import write_task

pytestmark = pytest.mark.integration


def test_trials_run_on_the_node_with_their_resource(tmp_path: Path, tiny_bert: str) -> None:
    tasks = [write_task(tmp_path / "data", "senti", "single", seed=1), write_task(tmp_path / "data", "pairs", "pair", seed=2)]
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store.open(url)
    _, token = store.issue_token("tester")
    with LocalRayCluster(tmp_path, head_resources={"control_node": 1}, worker_resources={"trainer_node": 4}) as cluster:
        server = LocalServer(database_url=url, data_dir=tmp_path / "data-dir", ray_address=cluster.address, extra_env=RAY_ENV)
        with server, Client(server.url, token) as client:
            live = LiveService(server, client, store, tasks, tiny_bert)
            placed = {}
            for resource in ("trainer_node", "control_node"):
                spec = study_spec(live, name=f"on-{resource}", search={"num_trials": 2, "max_concurrent": 2},
                                  resources={"cpu": 0.5, "custom": {resource: 1}})
                study = client.create_study(spec)
                study.wait(timeout=400, poll_s=0.5)
                assert study.state == "completed", dump_on_failure(live)
                assert study.data["ray_experiment"] == f"searchsvc-study-{study.id}"
                assert study.dashboard_url and str(cluster.dashboard_port) in study.dashboard_url
                placed[resource] = {r["metrics"]["node_id"] for t in study.trials() for r in study.reports(t["id"])}
    store.close()
    assert placed["trainer_node"] == {cluster.node_ids["trainer_node"]}
    assert placed["control_node"] == {cluster.node_ids["control_node"]}
