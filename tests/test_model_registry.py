"""The model registry on its own: what the operator's folder and file register, what they
refuse at start-up, and how a ``model`` resolves (the API tests cover it through the app)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from searchsvc.model_registry import (
    EXPORTED_MODEL_DIR,
    STUDY_MISSING,
    ModelRegistry,
    ModelResolver,
    RegisteredModel,
)
from searchsvc.paths import HUB_REFUSED, REFUSED, PathPolicy


def _model(folder: Path, model_type: str | None = "bert") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type} if model_type else {}))
    return folder


def test_the_exported_model_folder_is_the_one_workers_write() -> None:
    from workers.export import MERGED_DIR

    assert EXPORTED_MODEL_DIR == MERGED_DIR


def test_a_models_folder_offers_each_subfolder_with_a_config(tmp_path: Path) -> None:
    _model(tmp_path / "m" / "bert-small")
    _model(tmp_path / "m" / "untyped", model_type=None)
    (tmp_path / "m" / "empty").mkdir()
    _model(tmp_path / "m" / "bad name")
    (tmp_path / "m" / "README.md").write_text("not a model")
    _model(tmp_path / "elsewhere" / "llama-tiny", model_type="llama")
    (tmp_path / "m" / "linked").symlink_to(tmp_path / "elsewhere" / "llama-tiny", target_is_directory=True)
    registry = ModelRegistry.load(models_dir=tmp_path / "m")
    assert registry.entries() == [
        RegisteredModel("bert-small", (tmp_path / "m" / "bert-small").resolve(), family="bert"),
        RegisteredModel("linked", (tmp_path / "elsewhere" / "llama-tiny").resolve(), family="llama"),
        RegisteredModel("untyped", (tmp_path / "m" / "untyped").resolve(), family=None),
    ]


def test_a_models_file_maps_ids_to_folders(tmp_path: Path) -> None:
    _model(tmp_path / "store" / "a")
    _model(tmp_path / "store" / "b", model_type="t5")
    file = tmp_path / "conf" / "models.json"
    file.parent.mkdir()
    file.write_text(json.dumps({"plain": str(tmp_path / "store" / "a"),
                                "org/named": {"path": "../store/b", "description": "relative to the file", "family": "T5x"}}))
    registry = ModelRegistry.load(models_file=file)
    assert registry.get("plain") == RegisteredModel("plain", (tmp_path / "store" / "a").resolve(), family="bert")
    assert registry.get("org/named") == RegisteredModel("org/named", (tmp_path / "store" / "b").resolve(), family="T5x",
                                                        description="relative to the file")
    assert registry.get("a") is None


@pytest.mark.parametrize(("text", "named"), [
    ("gone: /no/such/folder\n", "gone"),
    ("- a list\n", "map model ids"),
    ("'../up': /tmp\n", "'../up'"),
    ("x: {path: /tmp, weights: 1}\n", "unknown keys weights"),
    ("x: {description: no path}\n", "give a folder"),
    ("x: [unclosed\n", "cannot be read"),
])
def test_a_wrong_models_file_is_refused_naming_the_entry(tmp_path: Path, text: str, named: str) -> None:
    file = tmp_path / "models.yaml"
    file.write_text(text)
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace(".", r"\.")):
        ModelRegistry.load(models_file=file)


def test_one_id_in_the_folder_and_the_file_is_refused(tmp_path: Path) -> None:
    _model(tmp_path / "m" / "dup")
    file = tmp_path / "models.yaml"
    file.write_text(f"dup: {tmp_path / 'm' / 'dup'}\n")
    with pytest.raises(ValueError, match="'dup' is registered twice"):
        ModelRegistry.load(models_dir=tmp_path / "m", models_file=file)
    with pytest.raises(ValueError, match="not a folder"):
        ModelRegistry.load(models_dir=tmp_path / "missing")


def test_resolution_order_study_registry_path_hub(tmp_path: Path) -> None:
    registered = _model(tmp_path / "registry" / "minilm")
    allowed = _model(tmp_path / "allowed" / "mine")
    export = tmp_path / "data" / "artifacts" / "study-7"
    _model(export / EXPORTED_MODEL_DIR)
    exports = {7: export}
    resolver = ModelResolver(ModelRegistry([RegisteredModel("minilm", registered)]),
                             PathPolicy(roots=[tmp_path / "allowed"]), exports.get)
    assert resolver.model("study:7") == str((export / EXPORTED_MODEL_DIR).resolve())
    assert resolver.model("minilm") == str(registered)
    assert resolver.model(str(allowed)) == str(allowed.resolve())
    for value, message in [("study:8", STUDY_MISSING), ("study:07x", STUDY_MISSING), ("study:" + "9" * 19, STUDY_MISSING),
                           ("bert-base-uncased", HUB_REFUSED), (str(registered), REFUSED)]:
        with pytest.raises(ValueError) as refused:
            resolver.model(value)
        assert str(refused.value) == message, value
    hub = ModelResolver(ModelRegistry(), PathPolicy(allow_hub=True), exports.get)
    assert hub.model("bert-base-uncased") == "bert-base-uncased"
