"""``searchsvc demo --keep`` leaves the service answering /healthz until ``searchsvc demo --stop``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.test_cli import searchsvc

pytestmark = pytest.mark.integration


def test_demo_keep_then_stop(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    run = searchsvc("demo", "--keep", "--trials", "1", "--epochs", "1", "--workdir", str(workdir))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record = json.loads((workdir / "service.json").read_text())
    assert f"The service keeps running at {record['url']} (pid {record['pid']}" in run.stdout
    assert f"searchsvc demo --stop --workdir {workdir}" in run.stdout
    try:
        health = httpx.get(f"{record['url']}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["dispatcher"] == "running"
        studies = httpx.get(f"{record['url']}/v1/studies", headers={"Authorization": f"Bearer {record['token']}"}, timeout=10)
        assert studies.json()["data"][0]["state"] == "completed"
        again = searchsvc("demo", "--keep", "--workdir", str(workdir))
        assert again.returncode == 6 and "already runs" in again.stderr
    finally:
        stopped = searchsvc("demo", "--stop", "--workdir", str(workdir))
    assert stopped.returncode == 0 and f"stopped the demo service at {record['url']}" in stopped.stdout
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{record['url']}/healthz", timeout=5)
    assert not (workdir / "service.json").exists()
