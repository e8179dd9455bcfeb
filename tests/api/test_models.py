"""Models come from the operator's registry (issue 10, "Models from a registry").

A second user set ``model`` to the first user's exported artifact and downloaded their
fine-tuned weights; a non-path ``model`` was downloaded from a hub. Here, through the real
app on SQLite and PostgreSQL: ``GET /v1/models`` lists the registry without folders, a
spec names a registered id and the stored spec holds a folder workers load, unknown and
hub ids are refused on ``model`` unless the operator enables the hub, and ``study:<id>``
reaches the user's own export only, reading the same as a missing one for anyone else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from searchsvc.config import Settings
from searchsvc.model_registry import STUDY_MISSING
from searchsvc.paths import HUB_REFUSED, REFUSED
from searchsvc.spec import parse_spec
from searchsvc.store import Store
from tests.utils.tasks import all_words, write_task


@dataclass
class Registry:
    client: TestClient
    store: Store
    alice: dict[str, str]
    bob: dict[str, str]
    task: dict  # a task folder both users may name
    tiny: Path  # the registered tiny BERT's folder
    data_dir: Path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder: a real tiny BERT (``tiny-bert``), a folder without config.json
    (not a model, so not offered), and a hidden folder (ignored)."""
    from workers.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("registry") / "models"
    build_tiny_model(root / "tiny-bert", family="bert", texts=all_words())
    (root / "notes").mkdir()
    (root / ".cache" / "x").mkdir(parents=True)
    (root / ".cache" / "x" / "config.json").write_text("{}")
    return root


@contextmanager
def _app(database_url: str, tmp_path: Path, models_dir: Path, **settings: object) -> Iterator[Registry]:
    catalog = tmp_path / "catalog"
    (catalog / "t5-small-local").mkdir(parents=True)
    (catalog / "t5-small-local" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    models_file = tmp_path / "models.yaml"
    models_file.write_text("described:\n  path: catalog/t5-small-local\n  description: a T5 for text-to-text tasks\n")
    shared = tmp_path / "shared"
    task = write_task(shared, "senti", "single")
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path / "data-dir", allowed_paths=str(shared),
                              models_dir=models_dir, models_file=models_file, **settings), dispatch=False)
    with TestClient(app) as client:
        store = app.state.service.store
        _, alice = store.issue_token("alice")
        _, bob = store.issue_token("bob")
        yield Registry(client, store, {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"}, task,
                       models_dir / "tiny-bert", tmp_path / "data-dir")


@pytest.fixture
def registry(database_url: str, tmp_path: Path, models_dir: Path) -> Iterator[Registry]:
    """The operator's registry (the models folder and a models file), hub downloads off
    (the default), only a shared task folder allowed as a path."""
    with _app(database_url, tmp_path, models_dir) as app:
        yield app


def _spec(model: str, task: dict) -> dict:
    return {"name": "registry", "model": model, "tasks": [task],
            "search": {"space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}}


def _problems(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    return {p["loc"]: p["msg"] for p in response.json()["detail"]}


def test_models_lists_the_registry_without_folders(registry: Registry, tmp_path: Path) -> None:
    response = registry.client.get("/v1/models", headers=registry.bob)
    assert response.status_code == 200, response.text
    assert response.json() == {"count": 2, "data": [
        {"id": "described", "family": "t5", "description": "a T5 for text-to-text tasks"},
        {"id": "tiny-bert", "family": "bert", "description": None},
    ]}
    for secret in (str(registry.tiny), str(tmp_path), "catalog", "models"):
        assert secret not in response.text
    assert registry.client.get("/v1/models").status_code == 401


def test_a_registered_id_validates_and_workers_get_a_loadable_folder(registry: Registry) -> None:
    from transformers import AutoConfig, AutoTokenizer

    created = registry.client.post("/v1/studies", json=_spec("tiny-bert", registry.task), headers=registry.bob)
    assert created.status_code == 201, created.text
    stored = registry.store.get_study(created.json()["id"])
    # the stored spec holds the resolved folder: what runners and workers read back
    assert stored.spec["model"] == str(registry.tiny.resolve())
    spec = parse_spec(stored.spec)
    assert AutoConfig.from_pretrained(spec.model).model_type == "bert"
    assert AutoTokenizer.from_pretrained(spec.model)("good movie")["input_ids"]
    # a file entry resolves relative to the models file
    other = registry.client.post("/v1/studies", json=_spec("described", registry.task), headers=registry.alice)
    assert other.status_code == 201, other.text
    assert other.json()["spec"]["model"].endswith(os.path.join("catalog", "t5-small-local"))


@pytest.mark.parametrize("model", ["bert-base-uncased", "google/bert_uncased_L-2_H-128_A-2", "no-such-model", "notes",
                                   ".cache", "tiny-bert/", "TINY-BERT"])
def test_unknown_and_hub_ids_are_refused_on_model(registry: Registry, model: str) -> None:
    response = registry.client.post("/v1/studies", json=_spec(model, registry.task), headers=registry.bob)
    problems = _problems(response)
    assert set(problems) == {"model"}
    assert problems["model"] in (HUB_REFUSED, REFUSED)  # ".cache" reads as a relative path: REFUSED
    assert "GET /v1/models" in HUB_REFUSED and "hub" in HUB_REFUSED
    assert registry.store.list_studies() == []


def test_the_hub_is_the_operators_choice_and_the_registry_comes_first(database_url: str, tmp_path: Path,
                                                                      models_dir: Path) -> None:
    with _app(database_url, tmp_path, models_dir, allow_hub_models=True) as app:
        hub = app.client.post("/v1/studies", json=_spec("bert-base-uncased", app.task), headers=app.bob)
        assert hub.status_code == 201, hub.text
        assert hub.json()["spec"]["model"] == "bert-base-uncased"
        registered = app.client.post("/v1/studies", json=_spec("tiny-bert", app.task), headers=app.bob)
        assert registered.json()["spec"]["model"] == str(app.tiny.resolve())


def test_the_hub_flag_reads_searchsvc_allow_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCHSVC_ALLOW_HUB", "1")
    assert Settings().allow_hub_models is True
    monkeypatch.setenv("SEARCHSVC_ALLOW_HUB", "0")
    assert Settings().allow_hub_models is False


def _export(registry: Registry, study_id: int, *, merged: bool = True) -> Path:
    """What the runner leaves when a study ends: ``artifacts/study-N`` holding ``merged/``."""
    folder = registry.data_dir / "artifacts" / f"study-{study_id}"
    (folder / "merged").mkdir(parents=True)
    if merged:
        (folder / "merged" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    registry.store.set_artifact(study_id, str(folder))
    return folder / "merged"


def test_study_id_reaches_only_the_users_own_export(registry: Registry) -> None:
    first = registry.client.post("/v1/studies", json=_spec("tiny-bert", registry.task), headers=registry.alice).json()
    merged = _export(registry, first["id"])
    unexported = registry.client.post("/v1/studies", json=_spec("tiny-bert", registry.task), headers=registry.alice).json()
    broken = registry.client.post("/v1/studies", json=_spec("tiny-bert", registry.task), headers=registry.alice).json()
    _export(registry, broken["id"], merged=False)  # an export without a model folder in it

    own = registry.client.post("/v1/studies", json=_spec(f"study:{first['id']}", registry.task), headers=registry.alice)
    assert own.status_code == 201, own.text
    assert own.json()["spec"]["model"] == str(merged.resolve())

    bobs = registry.client.post("/v1/studies", json=_spec(f"study:{first['id']}", registry.task), headers=registry.bob)
    assert _problems(bobs) == {"model": STUDY_MISSING}
    bodies = {bobs.text}
    for model, headers in [("study:999999", registry.bob), (f"study:{unexported['id']}", registry.alice),
                           (f"study:{broken['id']}", registry.alice), ("study:9223372036854775808", registry.alice),
                           ("study:abc", registry.alice), ("study:", registry.alice), ("study:-1", registry.alice)]:
        response = registry.client.post("/v1/studies", json=_spec(model, registry.task), headers=headers)
        assert response.status_code == 422, (model, response.text)
        bodies.add(response.text)
    assert len(bodies) == 1, bodies  # another user's study reads exactly like a missing one
    assert str(registry.data_dir) not in bobs.text


def test_a_wrong_registry_stops_the_service_at_start(database_url: str, tmp_path: Path) -> None:
    models_file = tmp_path / "models.yaml"
    models_file.write_text("gone: /no/such/folder\n")
    app = create_app(Settings(database_url=database_url, models_file=models_file), dispatch=False)
    with pytest.raises(ValueError, match="gone"), TestClient(app):
        pass


def test_serve_with_a_wrong_registry_exits_2_naming_the_entry(tmp_path: Path) -> None:
    from tests.test_cli import searchsvc

    models_file = tmp_path / "models.yaml"
    models_file.write_text("gone: /no/such/folder\n")
    run = searchsvc("serve", "--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}",
                    env={"SEARCHSVC_MODELS_FILE": str(models_file)})
    assert run.returncode == 2, run.stderr
    assert "error: model registry:" in run.stderr and "gone" in run.stderr and "Traceback" not in run.stderr
