"""Paths in a spec are confined to the operator's roots (issue 10, "Paths confined").

A second user of a shared server tried to reach the first user's files through a spec:
their task folder, ``..`` out of a root, a symlink out of a root, the exported artifact
in the data folder, and server files (``/etc``) whose errors mapped the filesystem. Each
case here submits through the real app on SQLite and PostgreSQL and checks the refusal.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from searchsvc.config import Settings
from searchsvc.paths import HUB_REFUSED, REFUSED
from searchsvc.store import Store
from tests.utils.tasks import write_task


@dataclass
class Shared:
    client: TestClient
    store: Store
    alice: dict[str, str]
    bob: dict[str, str]
    roots: Path  # holds one folder per user: roots/alice, roots/bob
    outside: Path  # a folder no root covers
    data_dir: Path
    model: str  # a model folder bob may use


@pytest.fixture
def shared(database_url: str, tmp_path: Path) -> Iterator[Shared]:
    """A service whose operator allows each user their own folder, ``<roots>/{user}``,
    plus a common model folder; the data folder sits under the roots' parent on purpose."""
    roots, outside, models = tmp_path / "users", tmp_path / "elsewhere", tmp_path / "models" / "tiny"
    models.mkdir(parents=True)
    (models / "config.json").write_text("{}")
    settings = Settings(
        database_url=database_url,
        allowed_paths=os.pathsep.join([str(roots / "{user}"), str(tmp_path / "models"), str(tmp_path)]),
        data_dir=tmp_path / "data-dir",
    )
    # tmp_path itself is a root too, so the data folder inside it must stay private
    # by the data-folder rule alone; the per-user rule is checked with its own app below.
    app = create_app(settings, dispatch=False)
    with TestClient(app) as client:
        store = app.state.service.store
        _, alice = store.issue_token("alice")
        _, bob = store.issue_token("bob")
        yield Shared(client, store, {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"},
                     roots, outside, tmp_path / "data-dir", str(models))


@pytest.fixture
def per_user(database_url: str, tmp_path: Path) -> Iterator[Shared]:
    """A service whose only roots are ``<roots>/{user}`` and the model folder."""
    roots, models = tmp_path / "users", tmp_path / "models" / "tiny"
    models.mkdir(parents=True)
    (models / "config.json").write_text("{}")
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data-dir",
                        allowed_paths=os.pathsep.join([str(roots / "{user}"), str(models.parent)]))
    app = create_app(settings, dispatch=False)
    with TestClient(app) as client:
        store = app.state.service.store
        _, alice = store.issue_token("alice")
        _, bob = store.issue_token("bob")
        yield Shared(client, store, {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"},
                     roots, tmp_path / "elsewhere", tmp_path / "data-dir", str(models))


def _spec(model: str, *tasks: dict) -> dict:
    return {"name": "confined", "model": model, "tasks": list(tasks),
            "search": {"space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}}


def _problems(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    return {p["loc"]: p["msg"] for p in response.json()["detail"]}


def test_user_b_cannot_use_user_a_task_folder(per_user: Shared) -> None:
    alice_task = write_task(per_user.roots / "alice", "senti", "single")
    ok = per_user.client.post("/v1/studies", json=_spec(per_user.model, alice_task), headers=per_user.alice)
    assert ok.status_code == 201, ok.text
    refused = per_user.client.post("/v1/studies", json=_spec(per_user.model, alice_task), headers=per_user.bob)
    assert _problems(refused) == {"tasks.0.path": REFUSED}


def test_dotdot_out_of_a_root_is_refused(per_user: Shared) -> None:
    alice_task = write_task(per_user.roots / "alice", "senti", "single")
    sneaky = {"name": "senti", "path": str(per_user.roots / "bob" / ".." / "alice" / "senti")}
    (per_user.roots / "bob").mkdir(parents=True)
    assert Path(sneaky["path"]).resolve() == Path(alice_task["path"]).resolve()  # it does reach alice's folder
    assert _problems(per_user.client.post("/v1/studies", json=_spec(per_user.model, sneaky), headers=per_user.bob)) == {
        "tasks.0.path": REFUSED}


def test_symlink_out_of_a_root_is_refused(per_user: Shared) -> None:
    secret = write_task(per_user.outside, "senti", "single")
    (per_user.roots / "bob").mkdir(parents=True)
    link = per_user.roots / "bob" / "senti"
    link.symlink_to(secret["path"], target_is_directory=True)
    assert (link / "train.jsonl").is_file()
    response = per_user.client.post("/v1/studies", json=_spec(per_user.model, {"name": "senti", "path": str(link)}),
                                    headers=per_user.bob)
    assert _problems(response) == {"tasks.0.path": REFUSED}


@pytest.mark.parametrize("path", ["/etc", "/root/.ssh", "/no/such/folder", "relative/folder", "~/x"])
def test_server_paths_get_one_answer_that_names_no_path(per_user: Shared, path: str) -> None:
    """Existing or not, readable or not: the same message, and never the path itself."""
    response = per_user.client.post("/v1/studies", json=_spec(path, {"name": "t", "path": path}), headers=per_user.bob)
    problems = _problems(response)
    assert problems == {"model": REFUSED if path.startswith(("/", "~")) else HUB_REFUSED, "tasks.0.path": REFUSED}
    assert path not in response.text


def test_model_file_outside_roots_is_not_read(per_user: Shared) -> None:
    response = per_user.client.post("/v1/studies", json=_spec("/etc/passwd", write_task(per_user.roots / "bob", "t", "single")),
                                    headers=per_user.bob)
    assert _problems(response) == {"model": REFUSED}
    assert "JSON" not in response.text and "passwd" not in response.text


def test_hub_ids_need_the_operator(per_user: Shared, database_url: str, tmp_path: Path) -> None:
    task = write_task(per_user.roots / "bob", "t", "single")
    assert _problems(per_user.client.post("/v1/studies", json=_spec("bert-base-uncased", task), headers=per_user.bob)) == {
        "model": HUB_REFUSED}
    settings = Settings(database_url=database_url, allowed_paths=str(per_user.roots / "{user}"), allow_hub_models=True,
                        data_dir=tmp_path / "data-dir")
    with TestClient(create_app(settings, dispatch=False)) as client:
        ok = client.post("/v1/studies", json=_spec("google/bert_uncased_L-2_H-128_A-2", task), headers=per_user.bob)
        assert ok.status_code == 201, ok.text
        assert _problems(client.post("/v1/studies", json=_spec("../../etc", task), headers=per_user.bob)) == {"model": REFUSED}


def test_artifacts_in_the_data_folder_belong_to_their_owner(shared: Shared) -> None:
    """B set ``model`` to A's exported artifact: refused, although the data folder lies
    under an allowed root here; A may fine-tune from it."""
    task = write_task(shared.roots / "alice", "t", "single")
    study = shared.client.post("/v1/studies", json=_spec(shared.model, task), headers=shared.alice).json()
    merged = shared.data_dir / "artifacts" / f"study-{study['id']}" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    shared.store.set_artifact(study["id"], str(merged.parent))

    bob_task = write_task(shared.roots / "bob", "t", "single")
    refused = shared.client.post("/v1/studies", json=_spec(str(merged), bob_task), headers=shared.bob)
    assert _problems(refused) == {"model": REFUSED}
    own = shared.client.post("/v1/studies", json=_spec(str(merged), task), headers=shared.alice)
    assert own.status_code == 201, own.text
    assert own.json()["spec"]["model"] == str(merged.resolve())
    # nor may any task or model point elsewhere into the data folder (checkpoints, logs)
    (shared.data_dir / "ray_results" / "t").mkdir(parents=True)
    sneaky = {"name": "t", "path": str(shared.data_dir / "ray_results" / "t")}
    assert _problems(shared.client.post("/v1/studies", json=_spec(shared.model, sneaky), headers=shared.alice)) == {
        "tasks.0.path": REFUSED}


def test_nothing_is_allowed_by_default(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEARCHSVC_ALLOWED_PATHS", raising=False)
    task = write_task(tmp_path / "data", "t", "single")
    with TestClient(create_app(Settings(database_url=database_url, data_dir=tmp_path / "d"), dispatch=False)) as client:
        _, token = client.app.state.service.store.issue_token("carol")  # type: ignore[attr-defined]
        response = client.post("/v1/studies", json=_spec(str(tmp_path), task), headers={"Authorization": f"Bearer {token}"})
        assert _problems(response) == {"model": REFUSED, "tasks.0.path": REFUSED}
