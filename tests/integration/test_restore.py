"""Kill -9 the control plane mid-study, start it again: the study resumes and completes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from searchsvc.client import Client
from searchsvc.local_server import LocalServer, free_port
from searchsvc.store import Store
from tests.integration.conftest import LiveService, study_spec
from tests.integration.helpers import assert_each_epoch_once, wait_for
from tests.utils.databases import BACKENDS, fresh_database
from tests.utils.tasks import write_task

pytestmark = pytest.mark.integration


EPOCHS = 8


def sql_reports(store: Store, study_id: int) -> dict[int, list[dict]]:
    """Each trial's reports as SQL holds them, without checkpoint paths (Ray's retention
    deletes older checkpoints later and the store forgets their paths: not a change of content)."""
    return {t.id: [{"attempt": r.attempt, "epoch": r.epoch, "objective": r.objective, "metrics": r.metrics}
                   for r in store.list_reports(study_id, t.id)]
            for t in store.list_trials(study_id)}


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
                          train={"max_epochs": EPOCHS, "patience": EPOCHS, "batch_size": 8, "max_seq_len": 16, "seed": 0})
        study = live.client.create_study(spec)
        # Two reports, not one: the first epoch's checkpoint is then surely in Tune's saved
        # state (SQL hears of a result a moment before Tune saves it), so the trial can only
        # resume, never start over; EPOCHS leaves it several epochs to still be running.
        wait_for(lambda: sum(t["state"] == "completed" for t in study.trials()) >= 1
                 and any(t["state"] == "running" and t["num_reports"] >= 2 for t in study.trials()),
                 poll_s=0.2, timeout_s=300, what="one finished trial and one running with two reports")
        first.process.kill()  # SIGKILL: no clean-up of any kind
        first.process.wait()
        first.stop()
        live.client.close()
        before = sql_reports(store, study.id)  # what reached SQL before the crash
        trials_before = {t.id: t for t in store.list_trials(study.id)}
        finished_before = {i: t for i, t in trials_before.items() if t.state == "completed"}
        interrupted = [i for i, t in trials_before.items() if t.state == "running" and 2 <= len(before[i]) < EPOCHS]
        assert interrupted, f"no trial was mid-way at the crash: {[(t.state, len(before[i])) for i, t in trials_before.items()]}"

        second = server()
        restarted_at = time.monotonic()
        with second, Client(second.url, token) as client:
            study = client.study(study.id)
            wait_for(lambda: study.refresh().state == "running" and study.data["restarts"] == 1, what="the study to run again")
            running_again_s = time.monotonic() - restarted_at
            study.wait(timeout=600, poll_s=0.5)
            assert study.state == "completed", second.log_tail()
            trials = store.list_trials(study.id)
            after = sql_reports(store, study.id)
            log = second.log_tail()
        store.close()

    print(f"\n[{backend}] restart to running again: {running_again_s:.1f} s")
    assert len(trials) == 4  # the planned count: nothing lost, nothing added
    assert all(t.state == "completed" for t in trials), ([(t.id, t.state, t.error) for t in trials], log)
    for trial_id, trial in finished_before.items():  # finished trials were not run again
        now = next(t for t in trials if t.id == trial_id)
        assert now.attempt == 1 and now.finished_at == trial.finished_at
        assert after[trial_id] == before[trial_id]
    assert_each_epoch_once({i: [{"epoch": r["epoch"]} for r in rows] for i, rows in after.items()})  # every report once
    assert all(len(rows) == EPOCHS for rows in after.values())
    for trial_id, rows in before.items():  # what reached SQL before the crash is still there, unchanged
        assert after[trial_id][: len(rows)] == rows
    resumed = [r for t in interrupted for r in after[t] if "resumed_from_epoch" in r["metrics"]]
    assert resumed, ("the trial running at the crash should continue from its last checkpoint", log)
    assert all(r["metrics"]["resumed_from_epoch"] == r["epoch"] - 1 for r in resumed)
