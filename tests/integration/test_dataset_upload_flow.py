"""Upload -> study -> artifact through the SDK against a real ``searchsvc serve`` (issue 10,
"A data plane"): the server may read the model folder but none of the user's task folders,
so the study can only train on what was uploaded."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from searchsvc.client import Client, InvalidSpec
from searchsvc.local_server import LocalServer, free_port
from searchsvc.store import Store
from tests.integration.conftest import LiveService, dump_on_failure, study_spec
from tests.utils.databases import fresh_database
from tests.utils.tasks import write_task


def test_sdk_upload_then_study_then_artifact_without_a_shared_path(tmp_path: Path, tiny_bert: str) -> None:
    laptop = tmp_path / "laptop"
    tasks = [write_task(laptop, "senti", "single", seed=1), write_task(laptop, "pairs", "pair", seed=2)]
    with fresh_database("sqlite", tmp_path) as url:
        store = Store.open(url)
        _, token = store.issue_token("remote-user")
        server = LocalServer(database_url=url, data_dir=tmp_path / "server-data", ray_num_cpus=2,
                             dashboard_port=free_port(), extra_env={"SEARCHSVC_ALLOWED_PATHS": tiny_bert})
        with server, Client(server.url, token) as client:
            live = LiveService(server, client, store, tasks, tiny_bert)
            spec = study_spec(live, name="uploaded", search={"num_trials": 2, "max_concurrent": 2},
                              train={"max_epochs": 1, "patience": 1, "batch_size": 8, "max_seq_len": 16, "seed": 0})
            with pytest.raises(InvalidSpec):
                client.create_study(spec)  # the laptop's paths are nothing the server may read
            study = client.create_study(spec, upload=True)
            assert [t["dataset"] for t in study.data["spec"]["tasks"]] == [d["id"] for d in client.datasets()]
            study.wait(timeout=600, poll_s=0.5)
            assert study.state == "completed", dump_on_failure(live)
            assert {t["state"] for t in study.trials()} == {"completed"}
            archive = study.download_artifact(tmp_path / "best.tar.gz")
            with tarfile.open(archive) as tar:
                assert tar.getnames()
        store.close()
