"""Faults and control on a live service: retries, early stopping, ASHA, pause/resume, per-user limits.

One server (SQLite, a local Ray) for the module, with a limit of one concurrent trial per
user, so two studies of the same user queue behind each other.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from searchsvc.client import Client
from searchsvc.local_server import LocalServer, free_port
from searchsvc.store import Store
from tests.integration.conftest import LiveService, dump_on_failure, study_spec
from tests.integration.helpers import assert_each_epoch_once, reports_by_trial, wait_for
from tests.utils.tasks import write_task

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> Iterator[LiveService]:
    root = tmp_path_factory.mktemp("faults")
    tasks = [write_task(root / "data", "senti", "single", seed=1), write_task(root / "data", "pairs", "pair", seed=2)]
    url = f"sqlite:///{root / 'db.sqlite'}"
    store = Store.open(url)
    _, token = store.issue_token("tester")
    server = LocalServer(database_url=url, data_dir=root / "data-dir", ray_num_cpus=2, dashboard_port=free_port(),
                         extra_env={"SEARCHSVC_MAX_TRIALS_PER_USER": "1"})
    with server, Client(server.url, token) as client:
        yield LiveService(server, client, store, tasks, tiny_bert)
    store.close()


def test_a_killed_worker_is_retried_and_both_attempts_are_visible(limited: LiveService) -> None:
    spec = study_spec(limited, name="retry", search={"num_trials": 1, "max_retries": 1},
                      train={"max_epochs": 12, "patience": 12, "batch_size": 8, "max_seq_len": 16, "seed": 0})
    study = limited.client.create_study(spec)
    first = wait_for(lambda: next((r for t in study.trials() for r in study.reports(t["id"])), None), what="a first report")
    os.kill(int(first["metrics"]["worker_pid"]), signal.SIGKILL)  # the trial's worker dies mid-training
    study.wait(timeout=300, poll_s=0.5)
    assert study.state == "completed", dump_on_failure(limited)
    (trial,) = study.trials()
    assert trial["state"] == "completed" and trial["attempt"] == 2
    attempts = trial["attempts"]
    assert [(a["attempt"], a["state"]) for a in attempts] == [(1, "failed"), (2, "completed")]
    assert attempts[0]["error"] and ("died" in attempts[0]["error"].lower() or "actor" in attempts[0]["error"].lower())
    reports = study.reports(trial["id"])
    assert {r["attempt"] for r in reports} == {1, 2}
    # the retry continued from the last checkpoint: every epoch exactly once across both attempts
    assert [r["epoch"] for r in reports] == list(range(1, 13))
    first_of_retry = next(r for r in reports if r["attempt"] == 2)
    assert first_of_retry["epoch"] > 1 and first_of_retry["metrics"]["resumed_from_epoch"] == first_of_retry["epoch"] - 1


def test_patience_stops_a_trial_that_does_not_improve(limited: LiveService) -> None:
    spec = study_spec(limited, name="patience", search={"num_trials": 2, "space": {"lr": {"type": "choice", "values": [1e-12]}}},
                      train={"max_epochs": 6, "patience": 1, "batch_size": 8, "max_seq_len": 16, "seed": 0})
    study = limited.client.create_study(spec)
    study.wait(timeout=300, poll_s=0.5)
    assert study.state == "completed", dump_on_failure(limited)
    counts = [t["num_reports"] for t in study.trials()]
    assert counts == [2, 2]  # epoch 1 sets the best, epoch 2 does not beat it: stop (max was 6)


def test_asha_stops_weak_trials_early(limited: LiveService) -> None:
    spec = study_spec(limited, name="asha", search={
        "num_trials": 6, "scheduler": "asha", "grace_period": 1, "reduction_factor": 2, "algorithm": "random",
        "space": {"lr": {"type": "choice", "values": [1e-12, 5e-2]}}},
        train={"max_epochs": 4, "patience": 100, "batch_size": 8, "max_seq_len": 16, "seed": 0})
    study = limited.client.create_study(spec)
    study.wait(timeout=400, poll_s=0.5)
    assert study.state == "completed", dump_on_failure(limited)
    counts = sorted(t["num_reports"] for t in study.trials())
    assert len(counts) == 6
    assert counts[0] < 4, counts  # ASHA cut at least one trial short
    assert counts[-1] == 4, counts  # and let the best run to the end


def test_pause_keeps_trials_resumable_and_resume_finishes_them(limited: LiveService) -> None:
    spec = study_spec(limited, name="pause", search={"num_trials": 2},
                      train={"max_epochs": 25, "patience": 25, "batch_size": 8, "max_seq_len": 16, "seed": 0})
    study = limited.client.create_study(spec)
    wait_for(lambda: any(t["num_reports"] >= 2 for t in study.trials()), what="two epochs")
    study.pause()
    wait_for(lambda: study.refresh().state == "paused", what="the study to pause")
    paused = reports_by_trial(study)
    assert all(t["state"] in ("paused", "completed") for t in study.trials())
    time.sleep(3)
    assert reports_by_trial(study) == paused  # nothing trains while paused
    study.resume()
    study.wait(timeout=400, poll_s=0.5)
    assert study.state == "completed", dump_on_failure(limited)
    final = reports_by_trial(study)
    assert len(final) == 2
    assert_each_epoch_once(final)
    for trial_id, rows in paused.items():
        assert final[trial_id][: len(rows)] == rows  # what was reported before the pause is kept as it was


def test_a_users_second_study_waits_for_the_first(limited: LiveService) -> None:
    spec = study_spec(limited, name="queue", search={"num_trials": 1},
                      train={"max_epochs": 2, "patience": 2, "batch_size": 8, "max_seq_len": 16, "seed": 0})
    first = limited.client.create_study(spec)
    second = limited.client.create_study({**spec, "name": "queue-2"})
    wait_for(lambda: first.refresh().state == "running", what="the first study to start")
    assert second.refresh().state == "pending"  # one trial at a time for this user
    first.wait(timeout=300, poll_s=0.5)
    second.wait(timeout=300, poll_s=0.5)
    assert (first.state, second.state) == ("completed", "completed")
    assert second.data["started_at"] >= first.data["finished_at"]
