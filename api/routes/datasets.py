"""Dataset routes under /v1/datasets: upload a task folder, list, show, delete.

The upload is the one route whose body is not JSON: ``multipart/form-data`` with one part
per task file, each part's field name (or else its file name) being ``train.jsonl``,
``dev.jsonl`` or ``meta.json``, and the dataset's name in the query (``?name=sst2``)::

    curl -H "Authorization: Bearer $TOKEN" "$URL/v1/datasets?name=sst2" \\
         -F train.jsonl=@sst2/train.jsonl -F dev.jsonl=@sst2/dev.jsonl -F meta.json=@sst2/meta.json

It is streamed to disk as it arrives (see :mod:`api.multipart`) under the dataset limits
(``SEARCHSVC_DATASET_MAX_FILE_BYTES``, ``..._TOTAL_BYTES``), not the JSON body limit.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentUser
from api.multipart import MultipartError, MultipartReader, Part, boundary_of
from api.schemas import DatasetOut, ListOut, error_responses
from searchsvc.datasets import DatasetService, Upload
from searchsvc.errors import SpecError, TooLargeError
from searchsvc.spec import TASK_FILES

PATH = "/v1/datasets"
_FRAMING_BYTES = 1 << 20  # multipart boundaries and part headers on top of the files' own bytes

router = APIRouter(prefix=PATH, tags=["datasets"], responses=error_responses(401, 404, 413, 415, 422, 503))


def get_datasets(request: Request) -> DatasetService:
    return request.app.state.datasets  # type: ignore[no-any-return]


DatasetsDep = Annotated[DatasetService, Depends(get_datasets)]

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": list(TASK_FILES),
            "properties": {name: {"type": "string", "format": "binary"} for name in TASK_FILES},
        }}},
    }
}


@router.post("", status_code=201, response_model=DatasetOut, responses=error_responses(409), openapi_extra=_UPLOAD_BODY)
async def upload_dataset(
    request: Request,
    user: CurrentUser,
    datasets: DatasetsDep,
    name: Annotated[str, Query(min_length=1, max_length=64, description="the dataset's name, unique among yours")],
) -> DatasetOut:
    """Upload a task folder (multipart: train.jsonl, dev.jsonl, meta.json). It is checked
    row by row as a trial would read it: a problem answers 422 naming the file (and line)."""
    boundary = boundary_of(request.headers.get("content-type", ""))
    if boundary is None:
        raise HTTPException(415, "a dataset is uploaded as multipart/form-data with parts train.jsonl, dev.jsonl, meta.json")
    max_body = datasets.limits.max_total_bytes + _FRAMING_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise TooLargeError(f"the upload is larger than this service accepts ({datasets.limits.max_total_bytes} bytes)")
    upload = await run_in_threadpool(datasets.begin_upload, user, name)
    try:
        await _receive(request, MultipartReader(boundary), upload, max_body=max_body)
    except BaseException:
        upload.discard()
        raise
    dataset = await run_in_threadpool(datasets.finish_upload, user, upload)
    return DatasetOut.of(dataset, owner=user.name)


async def _receive(request: Request, reader: MultipartReader, upload: Upload, *, max_body: int) -> None:
    """Write each part to the upload as its bytes arrive (small local writes, done inline)."""
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body:
                raise TooLargeError(f"the upload is larger than this service accepts ({upload.limits.max_total_bytes} bytes)")
            for kind, value in reader.feed(chunk):
                if kind == "begin":
                    assert isinstance(value, Part)
                    upload.begin_file(_file_name(value))
                elif kind == "data":
                    assert isinstance(value, bytes)
                    upload.write(value)
                else:
                    upload.end_file()
        reader.close()
    except MultipartError as exc:
        raise SpecError([("body", str(exc))]) from None


def _file_name(part: Part) -> str:
    if part.name in TASK_FILES:
        return part.name
    return PurePosixPath(part.filename.replace("\\", "/")).name


@router.get("", response_model=ListOut[DatasetOut])
def list_datasets(user: CurrentUser, datasets: DatasetsDep) -> ListOut[DatasetOut]:
    """Your datasets, oldest first."""
    found = datasets.list(user)
    return ListOut(data=[DatasetOut.of(d, owner=user.name) for d in found], count=len(found))


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: int, user: CurrentUser, datasets: DatasetsDep) -> DatasetOut:
    return DatasetOut.of(datasets.get(user, dataset_id), owner=user.name)


@router.delete("/{dataset_id}", status_code=204, response_class=Response, responses=error_responses(409))
def delete_dataset(dataset_id: int, user: CurrentUser, datasets: DatasetsDep) -> Response:
    """Delete a dataset and its files; 409 while a pending, running or paused study of yours uses it."""
    datasets.delete(user, dataset_id)
    return Response(status_code=204)
