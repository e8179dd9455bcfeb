"""Uploaded datasets: task folders a user stores in the service, named in specs by id or name.

An upload is streamed file by file into a staging folder under the data root
(``SEARCHSVC_DATA_ROOT``), counted against the operator's limits as it arrives (a file
over its limit, or an upload over the total, stops at once: 413), then checked whole with
the checks a trial makes when it loads a task folder (:func:`workers.check_task_folder`),
then renamed into ``<root>/user-<owner id>/<random name>`` in one step, and only then
recorded in SQL. A failure at any step removes what was written; a crash between the
rename and the row leaves a folder no row names, never a row without its folder.

Ownership is enforced by the store (every lookup takes the owner): another user's
dataset is "not found", in a spec as on every route.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from searchsvc.errors import ConflictError, NotFoundError, SpecError, TooLargeError
from searchsvc.spec import TASK_FILES, check_dataset_name
from searchsvc.store import Dataset, Store, User

MAX_META_BYTES = 1 << 20  # a meta.json is a few hundred bytes; it is parsed whole
_STAGING = ".staging"
_FILE_PROBLEM = re.compile(r"^(train\.jsonl|dev\.jsonl|meta\.json)[,:]\s*(.*)$", re.DOTALL)


@dataclass(frozen=True)
class UploadLimits:
    """The operator's limits on one upload, in bytes (``SEARCHSVC_DATASET_MAX_*``)."""

    max_file_bytes: int = 256 << 20
    max_total_bytes: int = 512 << 20

    def for_file(self, name: str) -> int:
        return min(self.max_file_bytes, MAX_META_BYTES) if name == "meta.json" else self.max_file_bytes


class Upload:
    """One upload being received: its files are written, one at a time, into a private
    staging folder. Not thread-safe (one request owns it)."""

    def __init__(self, folder: Path, *, name: str, limits: UploadLimits) -> None:
        self.folder = folder
        self.name = name
        self.limits = limits
        self.sizes: dict[str, int] = {}
        self._current: str | None = None
        self._handle: IO[bytes] | None = None
        folder.mkdir(parents=True)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    def begin_file(self, name: str) -> None:
        """Start the file ``name``. Raises SpecError for a name that is not a task file, or
        one sent twice (the message quotes no part of the request)."""
        if name not in TASK_FILES:
            raise SpecError([("files", f"an upload holds only {', '.join(TASK_FILES)} (one part each)")])
        if name in self.sizes:
            raise SpecError([(name, "sent twice")])
        self.end_file()
        self._current, self.sizes[name] = name, 0
        self._handle = open(self.folder / name, "xb")  # noqa: SIM115 - closed in end_file/discard

    def write(self, chunk: bytes) -> None:
        """Append to the current file. Raises TooLargeError past a limit (nothing more is written)."""
        if self._current is None or self._handle is None:
            raise SpecError([("files", "data outside a file part")])
        size = self.sizes[self._current] + len(chunk)
        limit = self.limits.for_file(self._current)
        if size > limit:
            raise TooLargeError(f"{self._current} is larger than this service accepts ({limit} bytes)")
        if self.total_bytes + len(chunk) > self.limits.max_total_bytes:
            raise TooLargeError(f"the upload is larger than this service accepts ({self.limits.max_total_bytes} bytes)")
        self._handle.write(chunk)
        self.sizes[self._current] = size

    def end_file(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._current, self._handle = None, None

    def discard(self) -> None:
        """Remove everything written (idempotent)."""
        self.end_file()
        shutil.rmtree(self.folder, ignore_errors=True)


class DatasetService:
    """User-facing operations on datasets; the API's dataset routes call these only."""

    def __init__(self, store: Store, *, root: Path, limits: UploadLimits | None = None) -> None:
        self.store = store
        self.root = root
        self.limits = limits or UploadLimits()

    def begin_upload(self, user: User, name: str) -> Upload:
        """A staging area for a new dataset ``name`` of ``user``. Raises SpecError for a bad
        name, ConflictError when the user already has one of that name (checked again when
        the dataset is recorded; this early check spares sending the files)."""
        try:
            check_dataset_name(name)
        except ValueError as exc:
            raise SpecError([("name", str(exc))]) from None
        if self.store.dataset_name_taken(user.id, name):
            raise ConflictError(f"you already have a dataset named {name!r}")
        return Upload(self.root / _STAGING / uuid.uuid4().hex, name=name, limits=self.limits)

    def finish_upload(self, user: User, upload: Upload) -> Dataset:
        """Check the staged files as a trial would read them, move them into the user's
        folder and record the dataset. Raises SpecError naming the file and its problem
        (missing, malformed meta, a bad row), ConflictError for a name taken meanwhile.
        On any failure nothing stays on disk or in SQL."""
        from workers import check_task_folder

        upload.end_file()
        try:
            missing = [name for name in TASK_FILES if name not in upload.sizes]
            if missing:
                raise SpecError([(name, "missing from the upload") for name in missing])
            try:
                check = check_task_folder(upload.folder)
            except ValueError as exc:
                raise SpecError([_file_problem(str(exc), upload.folder)]) from None
            relative = f"user-{user.id}/{upload.folder.name}"
            final = self.root / relative
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(upload.folder, final)  # one step: the folder is there whole, or not at all
        except BaseException:
            upload.discard()
            raise
        try:
            return self.store.create_dataset(
                user.id, name=upload.name, folder=relative, train_bytes=upload.sizes["train.jsonl"],
                dev_bytes=upload.sizes["dev.jsonl"], meta_bytes=upload.sizes["meta.json"],
                train_rows=check.train_rows, dev_rows=check.dev_rows,
            )
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise

    def list(self, user: User) -> list[Dataset]:
        return self.store.list_datasets(user.id)

    def get(self, user: User, dataset_id: int) -> Dataset:
        return self.store.get_dataset(dataset_id, owner_id=user.id)

    def delete(self, user: User, dataset_id: int) -> None:
        """Raises NotFoundError, or ConflictError while an unfinished study names it."""
        dataset = self.store.delete_dataset(dataset_id, owner_id=user.id)
        shutil.rmtree(self.folder_of(dataset), ignore_errors=True)

    def folder_of(self, dataset: Dataset) -> Path:
        return self.root / dataset.folder

    def resolve_tasks(self, user: User, raw_spec: dict[str, Any]) -> tuple[dict[str, Any], list[Path]]:
        """``raw_spec`` with each task that names a ``dataset`` of ``user`` given its stored
        folder as ``path`` and the dataset's id as ``dataset``; also the folders, which the
        path rules then allow for this spec alone.

        Raises SpecError naming ``tasks.<i>.dataset`` for a dataset the user does not have,
        with one message whether it is missing or another user's, and ``tasks.<i>`` for a
        task naming both a path and a dataset. A malformed ``dataset`` value is left to
        :func:`searchsvc.spec.parse_spec`, which names the problem."""
        tasks = raw_spec.get("tasks")
        if not isinstance(tasks, list):
            return raw_spec, []
        problems: list[tuple[str, str]] = []
        resolved: list[Any] = []
        folders: list[Path] = []
        for index, task in enumerate(tasks):
            ref = task.get("dataset") if isinstance(task, dict) else None
            if not _is_reference(ref):
                resolved.append(task)
                continue
            if task.get("path") is not None:
                problems.append((f"tasks.{index}", "give the task's 'path' or its 'dataset', not both"))
                continue
            try:
                dataset = self.store.find_dataset(user.id, ref)
            except NotFoundError as exc:  # the same text for a missing dataset and another user's
                problems.append((f"tasks.{index}.dataset", str(exc)))
                continue
            folder = self.folder_of(dataset)
            folders.append(folder)
            resolved.append({**task, "dataset": dataset.id, "path": str(folder)})
        if problems:
            raise SpecError(problems)
        return {**raw_spec, "tasks": resolved}, folders


def _is_reference(value: Any) -> bool:
    """A value that could name a dataset (an id, or a well-formed name); anything else is
    for the spec's own validation to refuse."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1
    if isinstance(value, str):
        try:
            check_dataset_name(value)
        except ValueError:
            return False
        return True
    return False


def _file_problem(message: str, folder: Path) -> tuple[str, str]:
    """A worker's message about a staged folder as ``(file, problem)``: the server's staging
    path is cut out (it would map the server's disk), the file named in ``loc``."""
    text = message.replace(f"{folder}{os.sep}", "").replace(str(folder), "dataset")
    match = _FILE_PROBLEM.match(text)
    return (match.group(1), match.group(2)) if match else ("files", text)
