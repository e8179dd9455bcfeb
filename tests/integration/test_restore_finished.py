"""A kill -9 after SQL records a trial's end and before Tune saves it: the trial stays finished.

The window is made certain, not hoped for: ``TUNE_GLOBAL_CHECKPOINT_S`` (Tune's own
setting) is set past the test's length, so Tune saves its experiment state only when it
must: at the start and right after each trial checkpoint. A trial's end comes after its
last checkpoint, so from the moment SQL holds the trial as finished until the next
trial's first checkpoint (seconds later: a worker starts, a model loads, an epoch
trains), Tune's saved state still shows the trial running. Each test checks that
premise in Tune's saved state before restarting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from searchsvc.client import Client
from searchsvc.dispatch.study_runner import experiment_name
from searchsvc.local_server import LocalServer, free_port
from searchsvc.store import Store
from searchsvc.store.types import Trial
from tests.integration.conftest import LiveService, study_spec
from tests.integration.helpers import assert_each_epoch_once, optuna_history, wait_for
from tests.utils.databases import BACKENDS, fresh_database
from tests.utils.tasks import write_task

pytestmark = pytest.mark.integration


@dataclass
class Crash:
    """A study killed right after SQL recorded its first trial's end, then run to its end."""

    url: str
    study_id: int
    finished: Trial  # the first finished trial, as SQL held it at the crash
    reports_before: list[tuple]
    tune_status_at_crash: str  # that trial's status in Tune's saved state at the crash
    trials: list[Trial]  # every trial at the end
    reports: dict[int, list[tuple]]
    study_state: str
    log: str  # the study runners' logs, whole
    optuna: list[tuple[str, float | None]] = field(default_factory=list)  # (state, value) of every Optuna trial


def _reports(store: Store, study_id: int, trial_id: int) -> list[tuple]:
    return [(r.attempt, r.epoch, r.objective, r.created_at) for r in store.list_reports(study_id, trial_id)]


def tune_saved_status(data_dir: Path, study_id: int, ray_trial_id: str) -> str:
    """The trial's status in the newest experiment state Tune saved (its JSON format)."""
    folder = data_dir / "ray_results" / experiment_name(study_id)
    newest = max(folder.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    for trial_json, _ in json.loads(newest.read_text())["trial_data"]:
        trial = json.loads(trial_json)
        if trial["trial_id"] == ray_trial_id:
            return str(trial["status"])
    return "absent"


@pytest.fixture
def crash_after_first_end(tmp_path: Path, tiny_bert: str, request: pytest.FixtureRequest) -> Iterator[Callable[[dict], Crash]]:
    backend = request.param

    def run(spec_overrides: dict) -> Crash:
        tasks = [write_task(tmp_path / "data", "senti", "single", seed=1), write_task(tmp_path / "data", "pairs", "pair", seed=2)]
        with fresh_database(backend, tmp_path) as url:
            store = Store.open(url)
            _, token = store.issue_token("tester")
            data_dir = tmp_path / "data-dir"

            def server() -> LocalServer:
                return LocalServer(database_url=url, data_dir=data_dir, ray_num_cpus=2, dashboard_port=free_port(),
                                   extra_env={"TUNE_GLOBAL_CHECKPOINT_S": "100000"})

            first = server().start()
            live = LiveService(first, Client(first.url, token), store, tasks, tiny_bert)
            study = live.client.create_study(study_spec(live, **spec_overrides))
            finished = wait_for(lambda: next((t for t in store.list_trials(study.id) if t.state == "completed"), None),
                                poll_s=0.05, timeout_s=400, what="a first finished trial")
            first.process.kill()  # SIGKILL, at once: no clean-up of any kind
            first.process.wait()
            first.stop()
            live.client.close()
            finished = store.get_trial(study.id, finished.id)  # as SQL holds it after the crash
            reports_before = _reports(store, study.id, finished.id)
            status = tune_saved_status(data_dir, study.id, finished.ray_trial_id)

            second = server()
            with second, Client(second.url, token) as client:
                restored = client.study(study.id)
                restored.wait(timeout=600, poll_s=0.5)
                trials = store.list_trials(study.id)
                log = "\n".join(p.read_text(errors="replace") for p in sorted((data_dir / "logs").glob("*.log")))
                crash = Crash(url=url, study_id=study.id, finished=finished, reports_before=reports_before,
                              tune_status_at_crash=status, trials=trials,
                              reports={t.id: _reports(store, study.id, t.id) for t in trials},
                              study_state=restored.state, log=log)
                crash.optuna = optuna_history(url, study.id)
            store.close()
            return crash

    yield run


def assert_finished_trial_untouched(crash: Crash, *, planned: int) -> None:
    assert crash.tune_status_at_crash in ("RUNNING", "PENDING", "PAUSED"), (
        f"premise: Tune's saved state should still show the finished trial unfinished, not {crash.tune_status_at_crash}")
    assert crash.study_state == "completed", crash.log[-6000:]
    assert len(crash.trials) == planned and all(t.state == "completed" for t in crash.trials), (
        [(t.id, t.state, t.error) for t in crash.trials], crash.log[-6000:])
    now = next(t for t in crash.trials if t.id == crash.finished.id)
    assert now == crash.finished  # state, timestamps, attempts, best checkpoint: exactly as it was
    assert crash.reports[now.id] == crash.reports_before  # not one epoch more
    assert "is completed in SQL; not running it again" in crash.log
    assert_each_epoch_once({i: [{"epoch": r[1]} for r in rows] for i, rows in crash.reports.items()})
    # The TPE history holds each trial once, with its final value (the last report, as Tune tells it).
    finals = sorted(rows[-1][2] for rows in crash.reports.values())
    complete = sorted(value for state, value in crash.optuna if state == "COMPLETE")
    assert complete == pytest.approx(finals), crash.optuna
    assert all(state in ("COMPLETE", "FAIL") for state, _ in crash.optuna), crash.optuna


@pytest.mark.parametrize("crash_after_first_end", BACKENDS, indirect=True)
def test_a_trial_completed_before_the_crash_does_not_run_again(crash_after_first_end: Callable[[dict], Crash]) -> None:
    crash = crash_after_first_end({
        "name": "completed-then-kill", "search": {"num_trials": 3, "max_concurrent": 1},
        "train": {"max_epochs": 3, "patience": 3, "batch_size": 8, "max_seq_len": 16, "seed": 0},
    })
    assert_finished_trial_untouched(crash, planned=3)
    assert len(crash.reports_before) == 3


@pytest.mark.parametrize("crash_after_first_end", BACKENDS, indirect=True)
def test_a_trial_stopped_by_patience_trains_no_further_epoch(crash_after_first_end: Callable[[dict], Crash]) -> None:
    crash = crash_after_first_end({
        "name": "patience-then-kill",
        "search": {"num_trials": 2, "max_concurrent": 1, "space": {"lr": {"type": "choice", "values": [1e-12]}}},
        "train": {"max_epochs": 6, "patience": 1, "batch_size": 8, "max_seq_len": 16, "seed": 0},
    })
    assert_finished_trial_untouched(crash, planned=2)
    assert len(crash.reports_before) == 2  # epoch 1 sets the best, epoch 2 does not beat it: stopped (max was 6)


TUNE_STATE_PREFIXES = ("experiment_state-", "search_gen_state-", "searcher-state-")


def tune_state_copy(data_dir: Path, study_id: int) -> dict[str, bytes] | None:
    """Tune's saved experiment state (trial list, searcher), as bytes; None if caught mid-write."""
    folder = data_dir / "ray_results" / experiment_name(study_id)
    files = {p.name: p.read_bytes() for p in folder.glob("*") if p.is_file() and p.name.startswith(TUNE_STATE_PREFIXES)}
    try:
        for name, data in files.items():
            if name.startswith("experiment_state-"):  # (search_gen_state-*.json is a pickle)
                json.loads(data)
    except ValueError:
        return None
    return files or None


def saved_status(files: dict[str, bytes], ray_trial_id: str) -> str:
    newest = max(name for name in files if name.startswith("experiment_state-"))
    for trial_json, _ in json.loads(files[newest])["trial_data"]:
        if json.loads(trial_json)["trial_id"] == ray_trial_id:
            return str(json.loads(trial_json)["status"])
    return "absent"


def roll_back_tune_state(data_dir: Path, study_id: int, files: dict[str, bytes]) -> None:
    """Put Tune's saved state back as it was when ``files`` were read: what a crash would
    have left had Tune not saved since."""
    folder = data_dir / "ray_results" / experiment_name(study_id)
    for path in folder.glob("*"):
        if path.is_file() and path.name.startswith(TUNE_STATE_PREFIXES) and path.name not in files:
            path.unlink()
    for name, data in files.items():
        (folder / name).write_bytes(data)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_trial_stopped_by_asha_trains_no_further_epoch(backend: str, tmp_path: Path, tiny_bert: str) -> None:
    """ASHA stops a trial right after that epoch's checkpoint, and Tune saves its state at
    once (a checkpoint forces a save), so the window is milliseconds wide. It is recreated
    exactly: Tune's saved state is read as it changes; once SQL holds a trial as
    stopped by ASHA, the service is killed and Tune's state put back as it was before
    that trial's last epoch (the trial still running in it). ASHA's first rung is at epoch
    2, so the stopped trial checkpointed once before: Tune saved it running then."""
    max_epochs = 4
    tasks = [write_task(tmp_path / "data", "senti", "single", seed=1), write_task(tmp_path / "data", "pairs", "pair", seed=2)]
    with fresh_database(backend, tmp_path) as url:
        store = Store.open(url)
        _, token = store.issue_token("tester")
        data_dir = tmp_path / "data-dir"

        def server() -> LocalServer:
            return LocalServer(database_url=url, data_dir=data_dir, ray_num_cpus=2, dashboard_port=free_port())

        first = server().start()
        live = LiveService(first, Client(first.url, token), store, tasks, tiny_bert)
        study = live.client.create_study(study_spec(live, name="asha-then-kill", search={
            "num_trials": 6, "max_concurrent": 1, "scheduler": "asha", "grace_period": 2, "reduction_factor": 2,
            # ASHA ranks by the training loss: a vanishing lr leaves it where it starts, a large one lowers it, so
            # the two values never tie (accuracy on ~10 held-out rows can, and a tie stops nothing)
            "metric": "train_loss", "mode": "min",
            "algorithm": "random", "space": {"lr": {"type": "choice", "values": [1e-12, 5e-2]}}},
            train={"max_epochs": max_epochs, "patience": 100, "batch_size": 8, "max_seq_len": 16, "seed": 0}))
        copies: list[dict[str, bytes]] = []  # each distinct saved state Tune wrote, in order

        def stopped_by_asha() -> Trial | None:
            victim = next((t for t in store.list_trials(study.id) if t.state == "completed" and t.num_reports < max_epochs), None)
            if victim is None:
                copy = tune_state_copy(data_dir, study.id)
                if copy is not None and (not copies or copy != copies[-1]):
                    copies.append(copy)
            return victim

        victim = wait_for(stopped_by_asha, poll_s=0.05, timeout_s=500, what="a trial stopped by ASHA")
        first.process.kill()  # SIGKILL: no clean-up of any kind
        first.process.wait()
        first.stop()
        live.client.close()
        victim = store.get_trial(study.id, victim.id)
        reports_before = _reports(store, study.id, victim.id)
        running_in = [c for c in copies if saved_status(c, victim.ray_trial_id) in ("RUNNING", "PENDING")]
        assert running_in, ("premise: some saved state showed the trial still running", victim, reports_before,
                            [sorted(c) for c in copies][-3:], [saved_status(c, victim.ray_trial_id) for c in copies])
        roll_back_tune_state(data_dir, study.id, running_in[-1])

        second = server()
        with second, Client(second.url, token) as client:
            restored = client.study(study.id)
            restored.wait(timeout=600, poll_s=0.5)
            trials = store.list_trials(study.id)
            reports = {t.id: _reports(store, study.id, t.id) for t in trials}
            log = "\n".join(p.read_text(errors="replace") for p in sorted((data_dir / "logs").glob("*.log")))
        store.close()

    assert restored.state == "completed", log[-6000:]
    assert len(trials) == 6 and all(t.state == "completed" for t in trials), [(t.id, t.state, t.error) for t in trials]
    assert next(t for t in trials if t.id == victim.id) == victim  # its row exactly as it was
    assert reports[victim.id] == reports_before and len(reports_before) < max_epochs  # no further epoch
    assert "is completed in SQL; not running it again" in log
    assert_each_epoch_once({i: [{"epoch": r[1]} for r in rows] for i, rows in reports.items()})
