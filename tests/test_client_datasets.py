"""Datasets through the SDK and the CLI over real HTTP (issue 10, "A data plane"): a user
whose files the server cannot read uploads task folders and runs a study on them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from searchsvc.client import Client, Conflict, InvalidSpec, NotATaskFolder, NotFound
from tests.test_cli_errors import first_line, run_cli
from tests.utils.api_server import ServedApi, served_api
from tests.utils.tasks import write_task

SPACE = {"space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[ServedApi, str]]:
    """A service that allows no server path at all: only uploaded data can be trained on."""
    with served_api(f"sqlite:///{tmp_path / 'db.sqlite'}", data_dir=tmp_path / "server", allowed_paths="") as api:
        _, token = api.store.issue_token("alice")
        yield api, token


def test_sdk_uploads_the_spec_folders_once_and_submits_by_dataset(
    remote: tuple[ServedApi, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, token = remote
    laptop = tmp_path / "laptop"
    write_task(laptop, "senti", "single", seed=1)
    write_task(laptop, "pairs", "pair", seed=2)
    monkeypatch.chdir(laptop)  # relative paths, as a user types them
    spec: dict[str, Any] = {"name": "remote", "model": "some/model", "search": SPACE,
                            "tasks": [{"name": "senti", "path": "senti"}, {"name": "pairs", "path": "pairs", "weight": 0.5}]}
    with Client(api.url, token) as client:
        with pytest.raises(InvalidSpec):  # the server cannot read the laptop's paths
            client.create_study(spec)
        study = client.create_study(spec, upload=True)
        datasets = client.datasets()
        assert [re.sub(r"-[0-9a-f]{12}$", "", d["name"]) for d in datasets] == ["senti", "pairs"]  # <task>-<digest>
        assert study.data["spec"]["tasks"] == [
            {"name": "senti", "dataset": datasets[0]["id"], "weight": 1.0, "instruction": None},
            {"name": "pairs", "dataset": datasets[1]["id"], "weight": 0.5, "instruction": None},
        ]
        again = client.create_study(spec, upload=True)  # same files: nothing is uploaded twice
        assert len(client.datasets()) == 2 and again.data["spec"]["tasks"] == study.data["spec"]["tasks"]
        with pytest.raises(Conflict):
            client.delete_dataset(datasets[0]["id"])
        with pytest.raises(NotATaskFolder):
            client.create_study({**spec, "tasks": [{"name": "gone", "path": str(tmp_path / "nowhere")}]}, upload=True)

        own = client.upload_dataset(laptop / "senti", name="mine")
        assert (own["name"], own["train_rows"], own["dev_rows"]) == ("mine", 48, 24)
        client.delete_dataset(own["id"])
        with pytest.raises(NotFound):
            client.dataset(own["id"])


def test_cli_data_upload_list_delete(remote: tuple[ServedApi, str], tmp_path: Path) -> None:
    api, token = remote
    folder = Path(write_task(tmp_path / "laptop", "senti", "single")["path"])
    uploaded = run_cli("data", "upload", str(folder), "--name", "sst", url=api.url, token=token)
    assert uploaded.returncode == 0, uploaded.stderr
    dataset_id = uploaded.stdout.split()[-1]
    listed = run_cli("data", "list", url=api.url, token=token)
    assert listed.returncode == 0 and f"dataset {dataset_id} 'sst': 48 train / 24 dev rows" in listed.stdout
    twice = run_cli("data", "upload", str(folder), "--name", "sst", url=api.url, token=token)
    assert twice.returncode == 6 and "already have a dataset named 'sst'" in first_line(twice)
    (folder / "meta.json").write_text("{}")
    bad = run_cli("data", "upload", str(folder), "--name", "other", url=api.url, token=token)
    assert bad.returncode == 2 and "meta.json: " in bad.stderr
    assert run_cli("data", "delete", dataset_id, url=api.url, token=token).returncode == 0
    gone = run_cli("data", "delete", dataset_id, url=api.url, token=token)
    assert gone.returncode == 5 and "searchsvc data list" in gone.stderr
