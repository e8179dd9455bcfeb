"""``study plot`` and ``study logs`` (CLI) and ``Study.plot`` (SDK) over real HTTP against the real app."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from searchsvc.client import Client, InvalidSpec, NotFound
from searchsvc.plots import PLOT_KINDS, SIZES
from tests.test_cli_errors import first_line, run_cli
from tests.utils.api_server import ServedApi, served_api
from tests.utils.study_factory import build_study


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServedApi, str]]:
    with served_api(f"sqlite:///{tmp_path / 'db.sqlite'}") as api:
        _, token = api.store.issue_token("alice")
        yield api, token


def test_sdk_plot_to_a_folder_and_to_an_svg_file(served: tuple[ServedApi, str], two_tasks: list[dict[str, Any]],
                                                  tmp_path: Path) -> None:
    api, token = served
    study_id = build_study(api.store, "alice", two_tasks, running=True).id
    with Client(api.url, token) as client:
        study = client.study(study_id)
        png = study.plot("history", tmp_path)
        assert png == tmp_path / f"study-{study_id}-history.png"
        assert Image.open(io.BytesIO(png.read_bytes())).size == SIZES["history"]
        svg = study.plot("alpha", tmp_path / "alpha.svg", trial=0)
        assert b"<svg" in svg.read_bytes()
        with pytest.raises(InvalidSpec) as bad:
            study.plot("pie", tmp_path)
        assert bad.value.problems[0][0] == "kind"
    _, bob = api.store.issue_token("bob")
    with Client(api.url, bob) as client, pytest.raises(NotFound):
        client.study(study_id)  # bob cannot even see it, let alone its plots


def test_cli_study_plot_writes_every_kind(served: tuple[ServedApi, str], two_tasks: list[dict[str, Any]], tmp_path: Path) -> None:
    api, token = served
    study_id = build_study(api.store, "alice", two_tasks).id
    out = tmp_path / "images"
    result = run_cli("study", "plot", str(study_id), "--out", str(out), url=api.url, token=token)
    assert result.returncode == 0, result.stderr
    written = [Path(line) for line in result.stdout.split()]
    assert written == [out / f"study-{study_id}-{kind}.png" for kind in PLOT_KINDS]
    for kind, path in zip(PLOT_KINDS, written, strict=True):
        assert Image.open(path).size == SIZES[kind]
    one = run_cli("study", "plot", str(study_id), "--kind", "curves", "--format", "svg", "--out", str(out), url=api.url, token=token)
    assert one.returncode == 0 and one.stdout.split() == [str(out / f"study-{study_id}-curves.svg")]
    bad = run_cli("study", "plot", str(study_id), "--kind", "pie", url=api.url, token=token)
    assert bad.returncode == 2 and "invalid choice: 'pie'" in bad.stderr
    missing = run_cli("study", "plot", "999", "--out", str(out), url=api.url, token=token)
    assert missing.returncode == 5 and first_line(missing).startswith("error: not found (HTTP 404")


def test_cli_study_logs_shows_failed_attempts(served: tuple[ServedApi, str], two_tasks: list[dict[str, Any]]) -> None:
    api, token = served
    study = build_study(api.store, "alice", two_tasks, trials=2, running=True)
    first, second = api.store.list_trials(study.id)
    api.store.retry_trial(first.id, error="Traceback ...\nRuntimeError: worker died")
    api.store.finish_trial(second.id, "failed", error="Traceback ...\nValueError: lr too high")
    result = run_cli("study", "logs", str(study.id), url=api.url, token=token)
    assert result.returncode == 0, result.stderr
    assert f"=== trial #0 (id {first.id}) attempt 1: failed\nTraceback ...\nRuntimeError: worker died" in result.stdout
    assert f"=== trial #1 (id {second.id}) attempt 1: failed\nTraceback ...\nValueError: lr too high" in result.stdout
    one = run_cli("study", "logs", str(study.id), "--trial", "1", url=api.url, token=token)
    assert "lr too high" in one.stdout and "worker died" not in one.stdout
    none = run_cli("study", "logs", str(study.id), "--trial", "9", url=api.url, token=token)
    assert none.returncode == 5 and first_line(none) == f"error: study {study.id} has no trial #9 (its trials are numbered 0 to 1)"
    _, bob = api.store.issue_token("bob")
    assert run_cli("study", "logs", str(study.id), url=api.url, token=bob).returncode == 5
