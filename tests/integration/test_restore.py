"""Kill -9 the control plane mid-study, start it again: the study resumes and completes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from searchsvc.client import Client
from searchsvc.local_server import LocalServer, free_port
from searchsvc.store import Store
from tests.integration.conftest import LiveService, study_spec
from tests.integration.helpers import assert_each_epoch_once, reports_by_trial, wait_for
from tests.utils.databases import BACKENDS, fresh_database
from tests.utils.tasks import write_task

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_and_restart_resumes_the_study(backend: str, tmp_path: Path, tiny_bert: str) -> None:
    tasks = [write_task(tmp_path / "data", "senti", "single", seed=1), write_task(tmp_path / "data", "pairs", "pair", seed=2)]
    with fresh_database(backend, tmp_path) as url:
        store = Store.open(url)
        _, token = store.issue_token("tester")

        def server() -> LocalServer:
            return LocalServer(database_url=url, data_dir=tmp_path / "data-dir", ray_num_cpus=2, dashboard_port=free_port())

        first = server().start()
        live = LiveService(first, Client(first.url, token), store, tasks, tiny_bert)
        spec = study_spec(live, name="restore", search={"num_trials": 4, "max_concurrent": 1},
                          train={"max_epochs": 6, "patience": 6, "batch_size": 8, "max_seq_len": 16, "seed": 0})
        study = live.client.create_study(spec)
        wait_for(lambda: sum(t["state"] == "completed" for t in study.trials()) >= 1
                 and any(t["state"] == "running" and t["num_reports"] >= 1 for t in study.trials()),
                 timeout_s=300, what="one finished trial and one running")
        before = reports_by_trial(study)
        finished_before = {t["id"]: t for t in study.trials() if t["state"] == "completed"}

        first.process.kill()  # SIGKILL: no clean-up of any kind
        first.process.wait()
        first.stop()
        live.client.close()

        second = server()
        restarted_at = time.monotonic()
        with second, Client(second.url, token) as client:
            study = client.study(study.id)
            wait_for(lambda: study.refresh().state == "running" and study.data["restarts"] == 1, what="the study to run again")
            running_again_s = time.monotonic() - restarted_at
            study.wait(timeout=600, poll_s=0.5)
            assert study.state == "completed", second.log_tail()
            trials = study.trials()
            after = reports_by_trial(study)
        store.close()

    print(f"\n[{backend}] restart to running again: {running_again_s:.1f} s")
    assert len(trials) == 4  # the planned count: nothing lost, nothing added
    assert all(t["state"] == "completed" for t in trials)
    for trial_id, trial in finished_before.items():  # finished trials were not run again
        now = next(t for t in trials if t["id"] == trial_id)
        assert now["attempt"] == 1 and now["finished_at"] == trial["finished_at"]
        assert after[trial_id] == before[trial_id]
    assert_each_epoch_once(after)  # every report exactly once
    assert all(len(rows) == 6 for rows in after.values())
    for trial_id, rows in before.items():  # what reached SQL before the crash is still there, unchanged
        assert after[trial_id][: len(rows)] == rows
    interrupted = [t for t in before if t not in finished_before]
    resumed = [r for t in interrupted for r in after[t] if "resumed_from_epoch" in r["metrics"]]
    assert resumed, "the trial running at the crash should continue from its last checkpoint"
    assert all(r["metrics"]["resumed_from_epoch"] == r["epoch"] - 1 for r in resumed)
