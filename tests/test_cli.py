"""The CLI's local commands, run as a user would: in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from searchsvc.store import Store
from tests.utils.tasks import all_words


def searchsvc(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "searchsvc", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_token_create_prints_the_token_alone_on_the_last_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    result = searchsvc("token", "create", "--user", "carol", "--database-url", url)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("ss_") and " " not in token
    store = Store.open(url)
    assert store.authenticate(token).name == "carol"
    store.close()


def test_token_list_and_revoke(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    first = searchsvc("token", "create", "--user", "carol", "--label", "laptop", "--expires-in-days", "7", "--database-url", url)
    token = first.stdout.strip().splitlines()[-1]
    listed = searchsvc("token", "list", "--user", "carol", "--database-url", url)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.strip().splitlines()
    token_id, label, _created, expires = line.split("\t")
    assert label == "laptop" and expires != "expires never" and token not in listed.stdout
    assert searchsvc("token", "revoke", token_id, "--user", "dave", "--database-url", url).returncode == 1
    assert searchsvc("token", "revoke", token_id, "--user", "carol", "--database-url", url).returncode == 0
    store = Store.open(url)
    with pytest.raises(PermissionError):
        store.authenticate(token)
    store.close()


def test_train_runs_one_trial_without_ray_or_api(tmp_path: Path, two_tasks: list[dict]) -> None:
    from workers.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny", family="bert", texts=all_words())
    spec = {"name": "one", "model": str(model), "tasks": two_tasks, "method": "lora",
            "train": {"max_epochs": 2, "patience": 2, "batch_size": 8, "max_seq_len": 16}}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    result = searchsvc("train", str(spec_file), "--set", "lr=0.01", "--set", "lora_rank=2", "--set", "weight_senti=2.5",
                       "--workdir", str(tmp_path / "w"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1:" in result.stdout and "epoch 2:" in result.stdout
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["config"]["lr"] == 0.01 and summary["config"]["lora_rank"] == 2
    assert summary["config"]["weight_senti"] == 2.5  # a task weight, as the spec's search space accepts it
    assert 0.0 <= summary["best"]["avg_dev_score"] <= 1.0


@pytest.mark.parametrize(("args", "words"), [
    (["--set", "lr"], "KEY=VALUE"),
    (["--set", "warp=1"], "unknown hyperparameters"),
    (["--set", "weight_nosuch=1"], "unknown hyperparameters ['weight_nosuch']"),  # not a task of the spec
    (["--set", "method=magic"], "unknown method 'magic'"),
])
def test_train_rejects_bad_overrides(tmp_path: Path, two_tasks: list[dict], args: list[str], words: str) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"name": "one", "model": "m", "tasks": two_tasks}))
    result = searchsvc("train", str(spec_file), *args)
    assert result.returncode != 0
    assert words in result.stderr


def test_train_reports_spec_problems_with_their_paths(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("name: x\nmodel: m\ntasks: []\nsearch: {num_trials: 0}\n")
    result = searchsvc("train", str(spec_file))
    assert result.returncode == 2
    assert "tasks:" in result.stderr and "search.num_trials:" in result.stderr
