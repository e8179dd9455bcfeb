"""The models a service offers, and how a spec's ``model`` becomes a folder a worker loads.

On a shared server a spec's ``model`` must not be a door into the server's filesystem or a
reason to download gigabytes from a hub. So the operator lists the models on offer:

- a models folder (``SEARCHSVC_MODELS_DIR``): each subfolder holding a Hugging Face model
  (a ``config.json``) is a model whose id is the subfolder's name;
- a models file (``SEARCHSVC_MODELS_FILE``, YAML or JSON): a mapping of id to a folder, or
  to ``{path, description?, family?}``; relative folders are read from the file's folder.

Both are read once, at start-up, and a mistake in them stops the service there with a
message naming the entry, rather than surfacing as a user's failed study later.
``GET /v1/models`` lists ids, families and descriptions, never a folder.

A spec's ``model`` is resolved at submission by :class:`ModelResolver`, in this order:
``study:<id>`` (the user's own study's exported merged model), a registered id, a path
(confined by :class:`~searchsvc.paths.PathPolicy`), a hub id (only where the operator
enables hub downloads). The stored spec keeps the resolved folder, so a study runs,
resumes after a restart and exports from the same model even if the registry changes
later, and workers always receive a folder they can load.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchsvc.paths import PathPolicy

log = logging.getLogger("searchsvc.models")

STUDY_PREFIX = "study:"
# The folder of an export that holds the merged model; the same name as workers.export.MERGED_DIR
# (searchsvc's control plane does not import workers; a test checks the two agree).
EXPORTED_MODEL_DIR = "merged"
STUDY_MISSING = "no exported model of yours by that study id (a study of yours that has ended and been exported)"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}(/[A-Za-z0-9][A-Za-z0-9_.\-]{0,99})?$")
_STUDY_ID = re.compile(r"^[0-9]{1,18}$")  # below 2**63, so no id overflows a database integer
_MAX_TEXT = 500  # a description or family longer than this is cut; the API lists them all


@dataclass(frozen=True)
class RegisteredModel:
    """One model on offer: ``path`` is the real folder (never shown to users), ``family``
    the operator's word or ``config.json``'s ``model_type`` (``bert``, ``t5``, ``llama``)."""

    id: str
    path: Path
    family: str | None = None
    description: str | None = None


class ModelRegistry:
    """The operator's models by id; immutable once built."""

    def __init__(self, models: Iterable[RegisteredModel] = ()) -> None:
        self._by_id: dict[str, RegisteredModel] = {}
        for model in models:
            if model.id in self._by_id:
                raise ValueError(f"model id {model.id!r} is registered twice (models folder and models file?)")
            self._by_id[model.id] = model

    @classmethod
    def load(cls, *, models_dir: Path | None = None, models_file: Path | None = None) -> ModelRegistry:
        """Read the models folder and the models file (either may be None).

        Raises ValueError naming the file, folder or entry that is wrong: a folder that
        does not exist, a file that is not a mapping, an entry without a ``config.json``."""
        found: list[RegisteredModel] = []
        if models_dir is not None:
            found.extend(_scan_dir(models_dir))
        if models_file is not None:
            found.extend(_read_file(models_file))
        return cls(found)

    def get(self, model_id: str) -> RegisteredModel | None:
        return self._by_id.get(model_id)

    def entries(self) -> list[RegisteredModel]:
        """Every model, by id."""
        return sorted(self._by_id.values(), key=lambda m: m.id)

    def __len__(self) -> int:
        return len(self._by_id)


@dataclass(frozen=True)
class ModelResolver:
    """One user's rules for a spec's ``model`` (see the module docstring for the order).

    ``own_export(study_id)``: the export folder of that study if it is this user's and has
    been exported, else None; another user's study and a missing one read the same.
    Every refusal is a ValueError whose text never repeats the value."""

    registry: ModelRegistry
    paths: PathPolicy
    own_export: Callable[[int], Path | None]

    def model(self, value: str) -> str:
        """The folder a worker loads (or a hub id, where allowed); ValueError if refused."""
        if value.startswith(STUDY_PREFIX):
            return str(self._exported(value.removeprefix(STUDY_PREFIX)))
        registered = self.registry.get(value)
        if registered is not None:
            return str(registered.path)
        return self.paths.model(value)

    def _exported(self, study_id: str) -> Path:
        export = self.own_export(int(study_id)) if _STUDY_ID.match(study_id) else None
        merged = export / EXPORTED_MODEL_DIR if export is not None else None
        if merged is None or not (merged / "config.json").is_file():
            raise ValueError(STUDY_MISSING)
        return Path(os.path.realpath(merged))


def _scan_dir(folder: Path) -> list[RegisteredModel]:
    folder = folder.expanduser()
    if not folder.is_dir():
        raise ValueError(f"SEARCHSVC_MODELS_DIR {folder} is not a folder")
    found = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        if not (child / "config.json").is_file():
            log.warning("models folder: %s has no config.json; not offered", child.name)
            continue
        if not _ID.match(child.name) or ".." in child.name:
            log.warning("models folder: %r is not a usable model id (letters, digits, _ . -); not offered", child.name)
            continue
        path = Path(os.path.realpath(child))
        found.append(RegisteredModel(child.name, path, family=_family_of(path)))
    return found


def _read_file(file: Path) -> list[RegisteredModel]:
    import yaml

    file = file.expanduser()
    where = f"SEARCHSVC_MODELS_FILE {file}"
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{where}: cannot be read as YAML or JSON ({exc})") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ValueError(f"{where}: must map model ids to folders")  # noqa: TRY004 (one error kind for every config mistake)
    return [_entry(str(model_id), value, base=file.parent, where=where) for model_id, value in data.items()]


def _entry(model_id: str, value: Any, *, base: Path, where: str) -> RegisteredModel:
    if not _ID.match(model_id) or ".." in model_id:
        raise ValueError(f"{where}: {model_id!r} is not a usable model id (letters, digits, _ . -, at most one /)")
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        raise ValueError(f"{where}: {model_id}: give a folder, or {{path, description, family}}")  # noqa: TRY004
    unknown = set(value) - {"path", "description", "family"}
    if unknown:
        raise ValueError(f"{where}: {model_id}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    path = Path(os.path.realpath(base / Path(value["path"]).expanduser()))
    if not (path / "config.json").is_file():
        raise ValueError(f"{where}: {model_id}: {path} holds no config.json (a Hugging Face model folder)")
    family = _text(value.get("family")) or _family_of(path)
    return RegisteredModel(model_id, path, family=family, description=_text(value.get("description")))


def _family_of(path: Path) -> str | None:
    """``model_type`` from the model's ``config.json``, or None if it says none."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("models: %s/config.json is unreadable (%s); family unknown", path.name, exc)
        return None
    family = config.get("model_type") if isinstance(config, Mapping) else None
    return _text(family)


def _text(value: Any) -> str | None:
    if value is None or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    return (text[:_MAX_TEXT] or None) if text else None
