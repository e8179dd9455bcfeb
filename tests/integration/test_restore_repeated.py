"""Three kill -9s of the whole service in one study, at three different moments.

The moments are read from SQL, as an operator would see them: a trial has just started
(its row is running with no report yet), a trial is mid-way (a new epoch was just
reported), a trial has just completed. After each kill the service starts again and the
study runs on. At the end: the planned number of trials, every report once and none
lost, and no trial that had finished before a kill was touched again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from searchsvc.client import Client
from searchsvc.local_server import LocalServer, free_port
from searchsvc.store import Store
from searchsvc.store.types import UNFINISHED_TRIAL_STATES, Trial
from tests.integration.conftest import LiveService, study_spec
from tests.integration.helpers import assert_each_epoch_once, optuna_history, wait_for
from tests.utils.databases import BACKENDS, fresh_database
from tests.utils.tasks import write_task

pytestmark = pytest.mark.integration

PLANNED = 4
EPOCHS = 3
Snapshot = dict[int, tuple[Trial, list[tuple]]]  # trial id -> (row, reports)


def snapshot(store: Store, study_id: int) -> Snapshot:
    return {t.id: (t, [(r.attempt, r.epoch, r.objective, r.created_at) for r in store.list_reports(study_id, t.id)])
            for t in store.list_trials(study_id)}


def a_trial_starting(base: Snapshot) -> Callable[[Snapshot], bool]:
    """A trial row that appeared since ``base``, running, with no report yet."""
    return lambda now: any(i not in base and t.state == "running" and not r for i, (t, r) in now.items())


def an_epoch_reported_mid_trial(base: Snapshot) -> Callable[[Snapshot], bool]:
    """A trial still running that reported an epoch since ``base``: the next one is under way."""
    return lambda now: any(t.state == "running" and len(r) > len(base.get(i, (None, []))[1]) for i, (t, r) in now.items())


def a_trial_just_completed(base: Snapshot) -> Callable[[Snapshot], bool]:
    done = {i for i, (t, _) in base.items() if t.state == "completed"}
    return lambda now: any(t.state == "completed" and i not in done for i, (t, _) in now.items())


def progressed(before: Snapshot, now: Snapshot) -> bool:
    """A trial started, reported or ended since ``before``: the study is moving again."""
    return any(i not in before or (t.state, len(r)) != (before[i][0].state, len(before[i][1])) for i, (t, r) in now.items())


MOMENTS = {"a trial starting": a_trial_starting, "mid-trial": an_epoch_reported_mid_trial,
           "right after a trial completed": a_trial_just_completed}


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_kills_lose_nothing_and_restart_no_finished_trial(backend: str, tmp_path: Path, tiny_bert: str) -> None:
    tasks = [write_task(tmp_path / "data", "senti", "single", seed=1), write_task(tmp_path / "data", "pairs", "pair", seed=2)]
    with fresh_database(backend, tmp_path) as url:
        store = Store.open(url)
        _, token = store.issue_token("tester")

        def server() -> LocalServer:
            return LocalServer(database_url=url, data_dir=tmp_path / "data-dir", ray_num_cpus=2, dashboard_port=free_port())

        current = server().start()
        try:
            live = LiveService(current, Client(current.url, token), store, tasks, tiny_bert)
            spec = study_spec(live, name="three-kills", search={"num_trials": PLANNED, "max_concurrent": 1},
                              train={"max_epochs": EPOCHS, "patience": EPOCHS, "batch_size": 8, "max_seq_len": 16, "seed": 0})
            study_id = live.client.create_study(spec).id
            live.client.close()
            at_kills: list[Snapshot] = []
            recovery_s: list[float] = []
            for moment, condition in MOMENTS.items():
                fired = condition(snapshot(store, study_id))
                wait_for(lambda: fired(snapshot(store, study_id)), poll_s=0.05, timeout_s=400, what=moment)  # noqa: B023
                current.process.kill()  # SIGKILL: no clean-up of any kind
                current.process.wait()
                current.stop()
                at_kills.append(snapshot(store, study_id))
                restarted_at = time.monotonic()
                current = server().start()
                wait_for(lambda: store.get_study(study_id).restarts == len(at_kills)  # noqa: B023
                         and store.get_study(study_id).state == "running", what=f"the study to run again after the kill at {moment}")
                wait_for(lambda: progressed(at_kills[-1], snapshot(store, study_id)), poll_s=0.1,  # noqa: B023
                         what=f"the study to make progress after the kill at {moment}")
                recovery_s.append(time.monotonic() - restarted_at)
            with Client(current.url, token) as client:
                study = client.study(study_id)
                study.wait(timeout=900, poll_s=0.5)
            final = snapshot(store, study_id)
            history = optuna_history(url, study_id)
            logs = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "data-dir" / "logs").glob("*.log"))
        finally:
            current.stop()  # whichever server runs now (``with current`` would start a started one again)
            store.close()

    print(f"\n[{backend}] restart to the study's next step (a trial starts, reports or ends) after each kill: "
          f"{', '.join(f'{s:.1f} s' for s in recovery_s)}")
    print("\n".join(line for line in logs.splitlines() if "searchsvc.reconcile" in line))
    assert study.state == "completed", logs[-6000:]
    trials = [t for t, _ in final.values()]
    assert len(trials) == PLANNED and all(t.state == "completed" for t in trials), [(t.id, t.state, t.error) for t in trials]
    assert all(len(reports) == EPOCHS for _, reports in final.values())
    assert_each_epoch_once({i: [{"epoch": r[1]} for r in reports] for i, (_, reports) in final.items()})  # 0 duplicated
    restarted, lost = [], []
    for at_kill in at_kills:
        for trial_id, (trial, reports) in at_kill.items():
            if not reports and trial.state in UNFINISHED_TRIAL_STATES and trial_id not in final:
                continue  # started just before the kill and unknown to Tune's saved state: replaced, nothing to lose
            now, now_reports = final[trial_id]
            lost += [(trial_id, r) for r in reports if r not in now_reports]
            if trial.state not in UNFINISHED_TRIAL_STATES and (now, now_reports) != (trial, reports):
                restarted.append(trial_id)
    assert lost == []  # 0 reports lost
    assert restarted == []  # 0 finished trials touched again
    finals = sorted(reports[-1][2] for _, reports in final.values())
    assert sorted(v for state, v in history if state == "COMPLETE") == pytest.approx(finals), history
    assert all(state in ("COMPLETE", "FAIL") for state, _ in history), history
