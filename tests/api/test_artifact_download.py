"""Concurrent first downloads of an artifact all succeed and share one build (issue 10,
"Artifacts": three concurrent first downloads answered two 500s, because the tarball's
temporary name was per process and threads overwrote each other's)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import searchsvc.artifacts
from tests.api.conftest import ApiUsers


def _artifact(folder: Path) -> None:
    """A folder big enough that packing it takes a while (incompressible bytes)."""
    (folder / "merged").mkdir(parents=True)
    for i in range(4):
        (folder / "merged" / f"shard-{i}.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (folder / "config.json").write_text("{}")


def test_concurrent_first_downloads_all_succeed_and_build_once(
    api: ApiUsers, minimal_spec: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = api.client.post("/v1/studies", json=minimal_spec, headers=api.alice).json()
    folder = tmp_path / "artifacts" / f"study-{study['id']}"
    _artifact(folder)
    api.client.app.state.service.store.set_artifact(study["id"], str(folder))  # type: ignore[attr-defined]

    builds: list[object] = []
    real_open = tarfile.open

    def counting_open(*args: object, **kwargs: object) -> tarfile.TarFile:
        if kwargs.get("mode", "r").startswith("w"):  # type: ignore[union-attr]
            builds.append(args or kwargs.get("fileobj"))
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(searchsvc.artifacts.tarfile, "open", counting_open)

    def download(_: int) -> tuple[int, str]:
        response = api.client.get(f"/v1/studies/{study['id']}/artifact", headers=api.alice)
        ok = response.status_code == 200
        return response.status_code, hashlib.sha256(response.content).hexdigest() if ok else response.text

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(download, range(6)))
    assert [code for code, _ in results] == [200] * 6, results
    assert len({digest for _, digest in results}) == 1
    assert len(builds) == 1
    # what came back is the whole artifact, and no temporary file is left beside it
    body = api.client.get(f"/v1/studies/{study['id']}/artifact", headers=api.alice).content
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = sorted(tar.getnames())
    assert f"study-{study['id']}-artifact/merged/shard-3.bin" in names
    assert len(builds) == 1
    assert [p.name for p in folder.parent.iterdir() if "partial" in p.name] == []
    assert api.client.get(f"/v1/studies/{study['id']}/artifact", headers=api.bob).status_code == 404
