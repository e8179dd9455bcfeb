"""The Python SDK: ``Client`` talks to the REST API; ``Study`` wraps one study."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from searchsvc.client._errors import Conflict, NotATaskFolder, ServiceUnreachable, StudyTimeout, error_for
from searchsvc.client._progress import StudyProgressBar

TERMINAL_STATES = frozenset({"completed", "failed", "stopped"})
DEFAULT_URL = "http://127.0.0.1:8000"
TASK_FILES = ("train.jsonl", "dev.jsonl", "meta.json")  # the SDK does not import searchsvc.spec's copy (pydantic)


def load_spec(spec: dict[str, Any] | str | Path, *, base: Path | None = None) -> dict[str, Any]:
    """A spec as a dict: given as a dict, YAML/JSON text, or a path to a YAML/JSON file.

    Relative task paths, and a relative ``model`` that names a local folder, are made
    absolute against ``base`` (default: the working directory, where the user stands
    when typing them): the server cannot know that, and refuses relative paths.
    """
    if isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec and Path(spec).is_file()):
        path = Path(spec)
        data = _parse_text(path.read_text(encoding="utf-8"))
    elif isinstance(spec, str):
        data = _parse_text(spec)
    else:
        data = dict(spec)
    if isinstance(data, dict):
        data = _absolute_task_paths(data, base or Path.cwd())
    return data  # type: ignore[no-any-return]


def _parse_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        import yaml

        return yaml.safe_load(text)


def _absolute_task_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    model = data.get("model")
    if isinstance(model, str) and model and not Path(model).expanduser().is_absolute() and (base / model).is_dir():
        data = {**data, "model": str((base / model).resolve())}  # a local model folder, not a hub id
    tasks = data.get("tasks")
    if not isinstance(tasks, list):
        return data
    fixed = []
    for task in tasks:
        if isinstance(task, dict) and isinstance(task.get("path"), str) and not Path(task["path"]).expanduser().is_absolute():
            task = {**task, "path": str((base / task["path"]).resolve())}
        fixed.append(task)
    return {**data, "tasks": fixed}


def _dataset_slug(task_name: str) -> str:
    """A task name cut to what a dataset name allows, leaving room for a digest."""
    slug = re.sub(r"[^A-Za-z0-9_.\-]", "-", task_name)[:51]
    return slug if slug[:1].isalnum() else f"t{slug}"[:51]


def _files_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in TASK_FILES:
        digest.update(name.encode() + b"\0")
        with open(folder / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Client:
    """``Client(url, token)``; both default to ``SEARCHSVC_URL`` and ``SEARCHSVC_TOKEN``.

    ``transport`` lets tests run the SDK against the real app in-process.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("SEARCHSVC_URL") or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get("SEARCHSVC_TOKEN")
        self.has_token = bool(token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; raises ServiceUnreachable without an answer, an ApiError subclass for >= 400."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # connect, read, timeout, protocol: no usable answer
            raise ServiceUnreachable(self.url, str(exc) or type(exc).__name__) from exc
        self._raise_for_status(response, method, path)
        return response

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """Like :meth:`request`, but the body is not read: iterate ``response.iter_bytes()``
        inside the block (large downloads never sit in memory whole). A connection lost
        mid-body raises ServiceUnreachable too."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()  # an error body is small, and its detail names the problem
                    self._raise_for_status(response, method, path)
                yield response
        except httpx.TransportError as exc:
            raise ServiceUnreachable(self.url, str(exc) or type(exc).__name__) from exc

    def _raise_for_status(self, response: httpx.Response, method: str, path: str) -> None:
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = body.get("detail", body) if isinstance(body, dict) else body
            except ValueError:
                detail = response.text
            raise error_for(response.status_code, detail, method=method, url=f"{self.url}{path}")

    def create_study(self, spec: dict[str, Any] | str | Path, *, upload: bool = False) -> Study:
        """Submit a study. ``upload=True`` is for a service that does not share your
        filesystem: each task given by a local ``path`` is uploaded (see
        :meth:`upload_task`) and sent as ``{name, dataset: <id>}``; with the default
        ``False``, paths are sent as they are, for the server to read (under the folders
        its operator allows)."""
        data = load_spec(spec)
        if upload and isinstance(data.get("tasks"), list):
            data = {**data, "tasks": [self._uploaded(task, index) for index, task in enumerate(data["tasks"])]}
        return Study(self, self.request("POST", "/v1/studies", json=data).json())

    def _uploaded(self, task: Any, index: int) -> Any:
        if not isinstance(task, dict) or not isinstance(task.get("path"), str):
            return task  # a dataset already, or something for the server to refuse
        folder = Path(task["path"])
        if not all((folder / name).is_file() for name in TASK_FILES):
            raise NotATaskFolder(f"tasks[{index}].path: {folder} is not a local task folder ({', '.join(TASK_FILES)})")
        dataset = self.upload_task(folder, task_name=str(task.get("name") or folder.name))
        return {**{k: v for k, v in task.items() if k != "path"}, "dataset": dataset["id"]}

    def upload_task(self, folder: str | Path, *, task_name: str) -> dict[str, Any]:
        """Upload a task folder once: as dataset ``<task name>-<12 hex digits of its files'
        SHA-256>``, or return the dataset of yours that already has that name (the same
        files were uploaded before), so submitting a spec again uploads nothing."""
        folder = Path(folder)
        name = f"{_dataset_slug(task_name)}-{_files_digest(folder)[:12]}"
        existing = self._dataset_named(name)
        if existing is not None:
            return existing
        try:
            return self.upload_dataset(folder, name=name)
        except Conflict:  # uploaded meanwhile (another submission): use that one
            existing = self._dataset_named(name)
            if existing is None:
                raise
            return existing

    def _dataset_named(self, name: str) -> dict[str, Any] | None:
        return next((d for d in self.datasets() if d["name"] == name), None)

    def upload_dataset(self, path: str | Path, name: str | None = None) -> dict[str, Any]:
        """Upload a task folder (``train.jsonl``, ``dev.jsonl``, ``meta.json``) as a dataset
        named ``name`` (default: the folder's name), streamed from disk; returns the dataset
        (``id``, ``name``, row counts, sizes). Specs then name it ``{name, dataset: <id or
        name>}``. Raises InvalidSpec naming the file and problem if the service refuses a
        file, Conflict if you already have a dataset of that name."""
        folder = Path(path).expanduser()
        missing = [f for f in TASK_FILES if not (folder / f).is_file()]
        if missing:
            raise NotATaskFolder(f"{folder} is not a task folder: it lacks {', '.join(missing)}")
        handles = {f: open(folder / f, "rb") for f in TASK_FILES}  # noqa: SIM115 - closed below
        try:
            files = {f: (f, handle, "application/octet-stream") for f, handle in handles.items()}
            response = self.request("POST", "/v1/datasets", params={"name": name or folder.resolve().name}, files=files)
        finally:
            for handle in handles.values():
                handle.close()
        return response.json()  # type: ignore[no-any-return]

    def datasets(self) -> list[dict[str, Any]]:
        """Your datasets, oldest first."""
        return list(self.request("GET", "/v1/datasets").json()["data"])

    def dataset(self, dataset_id: int) -> dict[str, Any]:
        return self.request("GET", f"/v1/datasets/{dataset_id}").json()  # type: ignore[no-any-return]

    def delete_dataset(self, dataset_id: int) -> None:
        """Delete one of your datasets; Conflict while an unfinished study of yours uses it."""
        self.request("DELETE", f"/v1/datasets/{dataset_id}")

    def study(self, study_id: int) -> Study:
        return Study(self, self.request("GET", f"/v1/studies/{study_id}").json())

    def studies(self, *, state: str | None = None) -> list[Study]:
        params = {"state": state} if state else None
        body = self.request("GET", "/v1/studies", params=params).json()
        return [Study(self, item) for item in body["data"]]

    def models(self) -> list[dict[str, Any]]:
        """The models the service offers (``{"id", "family", "description"}``); a spec's
        ``model`` names one by ``id`` (or ``study:<id>``, one of your exported studies)."""
        return list(self.request("GET", "/v1/models").json()["data"])

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/healthz").json()  # type: ignore[no-any-return]


class Study:
    """One study. Attributes mirror the API's study object; ``refresh()`` re-reads it."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self._client = client
        self.data = data

    def __repr__(self) -> str:
        return f"Study(id={self.id}, name={self.name!r}, state={self.state!r})"

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def state(self) -> str:
        return str(self.data["state"])

    @property
    def progress(self) -> dict[str, Any]:
        return dict(self.data["progress"])

    @property
    def dashboard_url(self) -> str | None:
        return self.data.get("dashboard_url")

    def refresh(self) -> Study:
        self.data = self._client.request("GET", f"/v1/studies/{self.id}").json()
        return self

    def wait(self, *, progress: bool = False, timeout: float | None = None, poll_s: float = 1.0) -> Study:
        """Block until the study is completed, failed or stopped.

        Raises StudyTimeout after ``timeout`` seconds (the study keeps running).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = StudyProgressBar(self.name, self.progress["total"]) if progress else None
        try:
            while True:
                self.refresh()
                if bar:
                    bar.update(self.data)
                if self.state in TERMINAL_STATES:
                    return self
                if deadline is not None and time.monotonic() > deadline:
                    raise StudyTimeout(f"study {self.id} still {self.state} after {timeout} s")
                time.sleep(poll_s)
        finally:
            if bar:
                bar.close()

    def trials(self) -> list[dict[str, Any]]:
        return list(self._client.request("GET", f"/v1/studies/{self.id}/trials").json()["data"])

    def reports(self, trial_id: int) -> list[dict[str, Any]]:
        return list(self._client.request("GET", f"/v1/studies/{self.id}/trials/{trial_id}/reports").json()["data"])

    def trial_error(self, trial_id: int) -> dict[str, Any]:
        """The full error text of a trial and of each of its attempts (``{"trial_id", "state",
        "error", "attempts": [{"attempt", "state", "error"}]}``): the trial list shows one
        line of each, this the whole traceback."""
        return self._client.request("GET", f"/v1/studies/{self.id}/trials/{trial_id}/error").json()  # type: ignore[no-any-return]

    def best(self) -> dict[str, Any]:
        """``{"objective", "trial", "report"}`` of the best trial so far. Raises NotFound if none reported."""
        return self._client.request("GET", f"/v1/studies/{self.id}/best").json()  # type: ignore[no-any-return]

    def stop(self) -> Study:
        self.data = self._client.request("POST", f"/v1/studies/{self.id}/stop").json()
        return self

    def pause(self) -> Study:
        """Pause; running trials keep their checkpoints and continue on :meth:`resume`."""
        self.data = self._client.request("POST", f"/v1/studies/{self.id}/pause").json()
        return self

    def resume(self) -> Study:
        self.data = self._client.request("POST", f"/v1/studies/{self.id}/resume").json()
        return self

    def plot(self, kind: str, path: str | Path, *, trial: int | None = None, format: str | None = None) -> Path:
        """Save one plot of the study to ``path`` and return the file written.

        ``kind``: ``history``, ``history-time``, ``curves``, ``parallel``, ``importance``,
        ``alpha`` (PEML) or ``coordination`` (the server's ``/docs`` describes each).
        ``path``: a file, or an existing folder (then ``study-<id>-<kind>.<format>``).
        ``format``: ``png`` or ``svg``; by default the file's suffix, else png.
        ``trial``: the trial number for ``alpha`` and ``coordination`` (default: the best).
        Works while the study runs (it shows what has been reported so far). Raises
        InvalidSpec for an unknown kind or format, NotFound for someone else's study.
        """
        target = Path(path)
        if format is None:
            format = "svg" if target.suffix.lower() == ".svg" else "png"
        if target.is_dir():
            target = target / f"study-{self.id}-{kind}.{format}"
        params: dict[str, Any] = {"format": format}
        if trial is not None:
            params["trial"] = trial
        response = self._client.request("GET", f"/v1/studies/{self.id}/plots/{kind}", params=params)
        target.write_bytes(response.content)
        return target

    def download_artifact(self, path: str | Path, *, chunk_bytes: int = 1 << 20) -> Path:
        """Save the study's artifact (a .tar.gz, possibly gigabytes) to ``path``; in a folder
        it is named ``study-<id>-best.tar.gz``. Streamed: written in chunks to a temporary
        file beside the target, renamed onto it when complete, so memory stays flat and
        ``path`` never holds half an artifact (a failed download leaves no file behind)."""
        target = Path(path)
        if target.is_dir():
            target = target / f"study-{self.id}-best.tar.gz"
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            with self._client.stream("GET", f"/v1/studies/{self.id}/artifact") as response, partial.open("wb") as out:
                for chunk in response.iter_bytes(chunk_bytes):
                    out.write(chunk)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target
