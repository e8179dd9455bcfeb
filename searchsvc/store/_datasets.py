"""Uploaded datasets: one row per task folder a user stored under the service's data root.

The rows only describe the files (owner, name, where, sizes, row counts); the files
themselves are written and removed by :mod:`searchsvc.datasets`. Every lookup takes the
owner, so another user's dataset is "not found", never "forbidden".
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from searchsvc.errors import ConflictError, NotFoundError
from searchsvc.store._base import StoreBase
from searchsvc.store._rows import dataset_of, id_in_range
from searchsvc.store.models import DatasetRow, StudyRow
from searchsvc.store.types import TERMINAL_STUDY_STATES, Dataset

NOT_FOUND = "no dataset of yours has this id or name"


class DatasetsStore(StoreBase):
    def create_dataset(
        self, owner_id: int, *, name: str, folder: str, train_bytes: int, dev_bytes: int, meta_bytes: int,
        train_rows: int, dev_rows: int,
    ) -> Dataset:
        """Record an uploaded dataset. Raises ConflictError if the owner already has one
        named ``name`` (checked by a unique constraint, so two concurrent uploads of one
        name cannot both succeed)."""
        with self._scope() as session:
            if session.scalar(select(DatasetRow.id).where(DatasetRow.owner_id == owner_id, DatasetRow.name == name)):
                raise ConflictError(f"you already have a dataset named {name!r}")
            row = DatasetRow(owner_id=owner_id, name=name, folder=folder, train_bytes=train_bytes, dev_bytes=dev_bytes,
                             meta_bytes=meta_bytes, train_rows=train_rows, dev_rows=dev_rows)
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                raise ConflictError(f"you already have a dataset named {name!r}") from None
            return dataset_of(row)

    def dataset_name_taken(self, owner_id: int, name: str) -> bool:
        with self._scope() as session:
            return session.scalar(
                select(DatasetRow.id).where(DatasetRow.owner_id == owner_id, DatasetRow.name == name)
            ) is not None

    def list_datasets(self, owner_id: int) -> list[Dataset]:
        """The owner's datasets, oldest first."""
        with self._scope() as session:
            rows = session.scalars(select(DatasetRow).where(DatasetRow.owner_id == owner_id).order_by(DatasetRow.id))
            return [dataset_of(row) for row in rows]

    def get_dataset(self, dataset_id: int, *, owner_id: int) -> Dataset:
        """Raises NotFoundError if there is no such dataset or it is another user's."""
        with self._scope() as session:
            row = session.get(DatasetRow, dataset_id) if id_in_range(dataset_id) else None
            if row is None or row.owner_id != owner_id:
                raise NotFoundError(f"dataset {dataset_id} not found")
            return dataset_of(row)

    def find_dataset(self, owner_id: int, ref: int | str) -> Dataset:
        """The owner's dataset with id ``ref`` (an int) or name ``ref`` (a str). Raises
        NotFoundError with the same text whether it is missing or another user's."""
        with self._scope() as session:
            if isinstance(ref, int):
                row = session.get(DatasetRow, ref) if id_in_range(ref) else None
            else:
                row = session.scalar(select(DatasetRow).where(DatasetRow.owner_id == owner_id, DatasetRow.name == ref))
            if row is None or row.owner_id != owner_id:
                raise NotFoundError(NOT_FOUND)
            return dataset_of(row)

    def delete_dataset(self, dataset_id: int, *, owner_id: int) -> Dataset:
        """Delete the row and return what it described (the caller removes the files).

        Raises NotFoundError (missing or another user's) or ConflictError when a study of
        the owner that has not finished (pending, running, paused) names it in its spec:
        its trials still read the files. The check and the delete are one transaction."""
        with self._scope() as session:
            row = session.get(DatasetRow, dataset_id) if id_in_range(dataset_id) else None
            if row is None or row.owner_id != owner_id:
                raise NotFoundError(f"dataset {dataset_id} not found")
            studies = session.execute(
                select(StudyRow.id, StudyRow.spec).where(StudyRow.owner_id == owner_id,
                                                          StudyRow.state.not_in(TERMINAL_STUDY_STATES))
            )
            users = [study_id for study_id, spec in studies if dataset_id in _datasets_of(spec)]
            if users:
                raise ConflictError(f"dataset {dataset_id} is used by unfinished studies {users}; "
                                    "stop them (or wait for them) first")
            dataset = dataset_of(row)
            session.delete(row)
            return dataset


def _datasets_of(spec: object) -> set[int]:
    """The dataset ids a stored spec's tasks name (the service stores each as its id)."""
    tasks = spec.get("tasks") if isinstance(spec, dict) else None
    return {task["dataset"] for task in tasks or () if isinstance(task, dict) and isinstance(task.get("dataset"), int)}
