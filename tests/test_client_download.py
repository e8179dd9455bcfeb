"""The SDK streams an artifact to disk (issue 10, "Artifacts": the SDK held the whole
artifact, gigabytes for a real model, in memory before writing it).

The SDK talks over real HTTP to the real app (SQLite and PostgreSQL). The transport
under it is httpx's own, wrapped only to watch the download folder while the body is
still arriving: bytes must reach the disk before the last chunk has come, in a
temporary file, and the target must appear whole at the end or not at all.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from searchsvc.client import Client, NotFound, ServiceUnreachable, Study
from tests.utils.api_server import ServedApi, served_api


class _Watched(httpx.SyncByteStream):
    """The real response body, chunk by chunk; before passing each chunk on it records
    what lies in ``folder`` (``{name: size}``) and may fail after ``fail_after`` chunks."""

    def __init__(self, inner: httpx.SyncByteStream, folder: Path, seen: list[dict[str, int]], fail_after: int | None) -> None:
        self.inner, self.folder, self.seen, self.fail_after = inner, folder, seen, fail_after

    def __iter__(self) -> Iterator[bytes]:
        for count, chunk in enumerate(self.inner):
            self.seen.append({p.name: p.stat().st_size for p in self.folder.iterdir()})
            if self.fail_after is not None and count >= self.fail_after:
                raise httpx.ReadError("connection lost mid-body")
            yield chunk

    def close(self) -> None:
        self.inner.close()


class _WatchingTransport(httpx.BaseTransport):
    def __init__(self, folder: Path, *, fail_after: int | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.folder, self.fail_after = folder, fail_after
        self.seen: list[dict[str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                              stream=_Watched(response.stream, self.folder, self.seen, self.fail_after))

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def served(database_url: str) -> Iterator[ServedApi]:
    with served_api(database_url) as api:
        yield api


def _study_with_artifact(served: ServedApi, minimal_spec: dict, tmp_path: Path) -> tuple[str, int, str]:
    """A study of alice's whose export is ~6 MB of incompressible bytes; returns her token,
    the study id and the sha256 of the .tar.gz the service sends."""
    _, token = served.store.issue_token("alice")
    with Client(served.url, token) as client:
        study = client.create_study(minimal_spec)
        folder = tmp_path / "exports" / f"study-{study.id}"
        (folder / "merged").mkdir(parents=True)
        for i in range(3):
            (folder / "merged" / f"shard-{i}.bin").write_bytes(os.urandom(2 * 1024 * 1024))
        served.store.set_artifact(study.id, str(folder))
        whole = client.request("GET", f"/v1/studies/{study.id}/artifact").content  # the reference copy
    return token, study.id, hashlib.sha256(whole).hexdigest()


def test_download_streams_to_a_temporary_file_then_renames(served: ServedApi, minimal_spec: dict, tmp_path: Path) -> None:
    token, study_id, digest = _study_with_artifact(served, minimal_spec, tmp_path)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    transport = _WatchingTransport(downloads)
    with Client(served.url, token, transport=transport) as client:
        path = client.study(study_id).download_artifact(downloads, chunk_bytes=256 * 1024)

    assert path == downloads / f"study-{study_id}-best.tar.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in downloads.iterdir()) == [path.name]  # no temporary file left
    during = [snapshot for snapshot in transport.seen if snapshot]
    assert len(transport.seen) > 20  # the body did arrive in many chunks
    # while the body was still arriving, a temporary file (never the target) grew on disk
    assert during, "nothing reached the disk before the whole body had arrived"
    assert all(path.name not in snapshot and len(snapshot) == 1 for snapshot in during), during[:3]
    sizes = [next(iter(snapshot.values())) for snapshot in during]
    assert sizes == sorted(sizes) and len(set(sizes)) > 5, sizes
    assert max(sizes) < path.stat().st_size


def test_a_download_cut_off_leaves_no_file(served: ServedApi, minimal_spec: dict, tmp_path: Path) -> None:
    token, study_id, _ = _study_with_artifact(served, minimal_spec, tmp_path)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "keep.tar.gz").write_bytes(b"an earlier download")
    with Client(served.url, token, transport=_WatchingTransport(downloads, fail_after=10)) as client:
        study = client.study(study_id)
        with pytest.raises(ServiceUnreachable, match="connection lost mid-body"):
            study.download_artifact(downloads / "keep.tar.gz")
    assert [p.name for p in downloads.iterdir()] == ["keep.tar.gz"]
    assert (downloads / "keep.tar.gz").read_bytes() == b"an earlier download"  # not half overwritten

    _, bob = served.store.issue_token("bob")
    with Client(served.url, bob) as client, pytest.raises(NotFound):
        Study(client, {"id": study_id}).download_artifact(downloads)  # alice's study, asked for by bob
    assert [p.name for p in downloads.iterdir()] == ["keep.tar.gz"]
