"""Uploaded datasets through the real app (issue 10, "A data plane"), on SQLite and PostgreSQL.

A second user tried to train on the first user's task folder by naming its path; with
uploads, a folder belongs to whoever uploaded it: another user's dataset is 404 on every
route and "no dataset of yours" in a spec, with the same words as a missing one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from searchsvc.config import Settings
from searchsvc.paths import REFUSED
from tests.api.conftest import ApiUsers
from tests.utils.tasks import write_task

FILES = ("train.jsonl", "dev.jsonl", "meta.json")
SPACE = {"space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}


def upload(client: TestClient, headers: dict[str, str], folder: Path, name: str) -> Any:
    files = {f: (f, (folder / f).read_bytes()) for f in FILES if (folder / f).exists()}
    return client.post("/v1/datasets", params={"name": name}, files=files, headers=headers)


def spec_with(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "by-dataset", "model": "some/model", "tasks": list(tasks), "search": SPACE}


@pytest.fixture
def task(tmp_path: Path) -> Path:
    return Path(write_task(tmp_path / "local", "senti", "single", n_train=30, n_dev=12, seed=3)["path"])


def data_root(tmp_path: Path) -> Path:
    return tmp_path / "service-data" / "datasets"  # the api fixture's data folder


def test_upload_list_show_delete(api: ApiUsers, task: Path, tmp_path: Path) -> None:
    response = upload(api.client, api.alice, task, "senti")
    assert response.status_code == 201, response.text
    dataset = response.json()
    sizes = {f: (task / f).stat().st_size for f in FILES}
    assert (dataset["name"], dataset["owner"], dataset["train_rows"], dataset["dev_rows"]) == ("senti", "alice", 30, 12)
    assert (dataset["train_bytes"], dataset["dev_bytes"], dataset["meta_bytes"]) == tuple(sizes.values())
    assert dataset["total_bytes"] == sum(sizes.values())
    stored = [p for p in data_root(tmp_path).glob("user-*/*") if p.is_dir()]
    assert len(stored) == 1 and all((stored[0] / f).read_bytes() == (task / f).read_bytes() for f in FILES)
    assert not any((data_root(tmp_path) / ".staging").iterdir())  # the staging folder was renamed, not copied

    listed = api.client.get("/v1/datasets", headers=api.alice).json()
    assert listed["count"] == 1 and listed["data"][0] == dataset
    assert api.client.get(f"/v1/datasets/{dataset['id']}", headers=api.alice).json() == dataset

    assert upload(api.client, api.alice, task, "senti").status_code == 409  # names are unique per owner
    assert api.client.delete(f"/v1/datasets/{dataset['id']}", headers=api.alice).status_code == 204
    assert api.client.get(f"/v1/datasets/{dataset['id']}", headers=api.alice).status_code == 404
    assert api.client.get("/v1/datasets", headers=api.alice).json()["count"] == 0
    assert not stored[0].exists()


def test_another_users_dataset_is_not_found_anywhere(api: ApiUsers, task: Path, tmp_path: Path) -> None:
    alices = upload(api.client, api.alice, task, "senti").json()
    assert api.client.get("/v1/datasets", headers=api.bob).json() == {"data": [], "count": 0}
    assert api.client.get(f"/v1/datasets/{alices['id']}", headers=api.bob).status_code == 404
    assert api.client.delete(f"/v1/datasets/{alices['id']}", headers=api.bob).status_code == 404

    def refusal(ref: Any) -> Any:
        response = api.client.post("/v1/studies", json=spec_with({"name": "senti", "dataset": ref}), headers=api.bob)
        assert response.status_code == 422, response.text
        return response.json()["detail"]

    # by id and by name, alice's reads exactly as one that does not exist
    assert refusal(alices["id"]) == refusal(alices["id"] + 1000) == refusal("senti") == refusal("nothing-here")
    assert refusal("senti")[0]["loc"] == "tasks.0.dataset"
    # nor by the folder it is stored in (the datasets' root is private)
    folder = next(p for p in data_root(tmp_path).glob("user-*/*") if p.is_dir())
    response = api.client.post("/v1/studies", json=spec_with({"name": "senti", "path": str(folder)}), headers=api.bob)
    assert response.status_code == 422 and response.json()["detail"][0]["msg"] == REFUSED
    # bob may use the same name for his own
    assert upload(api.client, api.bob, task, "senti").status_code == 201
    assert api.client.get(f"/v1/datasets/{alices['id']}", headers=api.alice).status_code == 200


def test_a_spec_names_tasks_by_dataset(api: ApiUsers, task: Path, two_tasks: list[dict]) -> None:
    dataset = upload(api.client, api.alice, task, "senti").json()
    spec = spec_with({"name": "a", "dataset": dataset["id"]}, {"name": "b", "dataset": "senti"}, two_tasks[1])
    response = api.client.post("/v1/studies", json=spec, headers=api.alice)
    assert response.status_code == 201, response.text
    study = response.json()
    shown = study["spec"]["tasks"]
    assert [t.get("dataset") for t in shown] == [dataset["id"], dataset["id"], None]  # a name is stored as its id
    assert "path" not in shown[0] and shown[2]["path"] == two_tasks[1]["path"]  # the server's folder is not shown
    stored = api.client.app.state.service.store.get_study(study["id"], owner_id=1).spec["tasks"]  # type: ignore[attr-defined]
    assert stored[0]["path"] == stored[1]["path"] and json.loads((Path(stored[0]["path"]) / "meta.json").read_text())

    both = spec_with({"name": "a", "dataset": dataset["id"], "path": two_tasks[0]["path"]})
    response = api.client.post("/v1/studies", json=both, headers=api.alice)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == "tasks.0"
    neither = api.client.post("/v1/studies", json=spec_with({"name": "a", "path": None}), headers=api.alice)
    assert neither.status_code == 422 and neither.json()["detail"][0]["loc"] == "tasks.0"
    with_null = spec_with({"name": "a", "path": None, "dataset": "senti"})
    assert api.client.post("/v1/studies", json=with_null, headers=api.alice).status_code == 201
    for bad in (True, 0, "12", "../x", 2**31):
        response = api.client.post("/v1/studies", json=spec_with({"name": "a", "dataset": bad}), headers=api.alice)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == "tasks.0.dataset", bad


def test_a_dataset_in_use_cannot_be_deleted(api: ApiUsers, task: Path) -> None:
    dataset = upload(api.client, api.alice, task, "senti").json()
    study = api.client.post("/v1/studies", json=spec_with({"name": "a", "dataset": "senti"}), headers=api.alice).json()
    response = api.client.delete(f"/v1/datasets/{dataset['id']}", headers=api.alice)
    assert response.status_code == 409 and str(study["id"]) in response.json()["detail"]
    assert api.client.post(f"/v1/studies/{study['id']}/stop", headers=api.alice).json()["state"] == "stopped"
    assert api.client.delete(f"/v1/datasets/{dataset['id']}", headers=api.alice).status_code == 204


@pytest.mark.parametrize(("file", "content", "problem"), [
    ("meta.json", b"{not json", "cannot read meta"),
    ("meta.json", json.dumps({"metric": "accuracy", "labels": [0]}).encode(), "at least 2 labels"),
    ("train.jsonl", b'{"text": "fine", "label": 1}\n\n[1, 2]\n', "line 3: expected a JSON object"),
    ("dev.jsonl", b'{"text": "fine", "label": 7}\n', "line 1: label 7 is not among the meta labels"),
    ("dev.jsonl", b"", "no rows"),
])
def test_bad_files_are_422_naming_the_file_and_problem(
    api: ApiUsers, task: Path, tmp_path: Path, file: str, content: bytes, problem: str
) -> None:
    (task / file).write_bytes(content)
    response = upload(api.client, api.alice, task, "broken")
    assert response.status_code == 422, response.text
    [detail] = response.json()["detail"]
    assert detail["loc"] == file and problem in detail["msg"]
    assert str(tmp_path) not in response.text  # no server path in the message
    assert api.client.get("/v1/datasets", headers=api.alice).json()["count"] == 0
    assert not [p for p in data_root(tmp_path).rglob("*") if p.is_file()]  # nothing left on disk


def test_malformed_uploads_are_refused(api: ApiUsers, task: Path) -> None:
    (task / "dev.jsonl").unlink()
    response = upload(api.client, api.alice, task, "partial")
    assert response.status_code == 422 and response.json()["detail"] == [{"loc": "dev.jsonl", "msg": "missing from the upload"}]
    response = api.client.post("/v1/datasets", params={"name": "x"}, files={"notes.txt": ("notes.txt", b"hi")},
                               headers=api.alice)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == "files"
    for name in ("../up", "a" * 65, "123", "has space"):
        assert upload(api.client, api.alice, task, name).status_code == 422, name
    response = api.client.post("/v1/datasets", params={"name": "x"}, json={"train.jsonl": "..."}, headers=api.alice)
    assert response.status_code == 415
    assert api.client.post("/v1/datasets", params={"name": "x"}, files={}, headers={}).status_code == 401


@pytest.fixture
def small(database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Path]]:
    """A service whose operator allows 2 kB per file and 3 kB per upload."""
    settings = Settings(database_url=database_url, data_dir=tmp_path / "service-data",
                        dataset_max_file_bytes=2000, dataset_max_total_bytes=3000)
    app = create_app(settings, dispatch=False)
    with TestClient(app) as client:
        _, token = app.state.service.store.issue_token("alice")
        yield client, {"Authorization": f"Bearer {token}"}, data_root(tmp_path)


def test_oversized_uploads_are_413(small: tuple[TestClient, dict[str, str], Path], tmp_path: Path) -> None:
    client, headers, root = small
    fits = Path(write_task(tmp_path / "fits", "fits", "single", n_train=20, n_dev=10)["path"])
    assert upload(client, headers, fits, "fits").status_code == 201  # 2 kB per file holds 20 rows
    big_file = Path(write_task(tmp_path / "big", "big", "single", n_train=60, n_dev=4)["path"])
    assert (big_file / "train.jsonl").stat().st_size > 2000
    response = upload(client, headers, big_file, "big")
    assert response.status_code == 413 and "train.jsonl" in response.json()["detail"]
    big_total = Path(write_task(tmp_path / "total", "total", "single", n_train=40, n_dev=30)["path"])
    assert all((big_total / f).stat().st_size <= 2000 for f in FILES)
    assert upload(client, headers, big_total, "total").status_code == 413
    # a body with no declared length is counted as it streams, and stopped the same way
    request = client.build_request("POST", "/v1/datasets", params={"name": "chunked"}, headers=headers,
                                   files={f: (f, (big_file / f).read_bytes()) for f in FILES})
    body = request.read()
    chunked = client.post("/v1/datasets", params={"name": "chunked"},
                          content=iter([body[i:i + 512] for i in range(0, len(body), 512)]),
                          headers={**headers, "content-type": request.headers["content-type"]})
    assert chunked.status_code == 413
    assert [d["name"] for d in client.get("/v1/datasets", headers=headers).json()["data"]] == ["fits"]
    assert not any((root / ".staging").iterdir())
