"""One conformance suite for the store, run against SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from searchsvc.errors import AuthError, ConflictError, NotFoundError
from searchsvc.spec import parse_spec
from searchsvc.store import Store
from searchsvc.store.database import schema_is_current
from searchsvc.store.models import Base


def test_migrations_match_models_and_are_idempotent(store: Store, database_url: str) -> None:
    assert schema_is_current(store.engine)
    tables = set(inspect(store.engine).get_table_names()) - {"alembic_version"}
    assert tables == set(Base.metadata.tables)
    for name, table in Base.metadata.tables.items():
        columns = {c["name"] for c in inspect(store.engine).get_columns(name)}
        assert columns == set(table.columns.keys()), name
    Store.open(database_url).close()  # a second start migrates nothing and fails on nothing


def test_tokens_are_hashed_and_authenticate(store: Store) -> None:
    user, token = store.issue_token("alice")
    assert store.authenticate(token) == user
    with store.engine.connect() as conn:
        stored = [row[0] for row in conn.exec_driver_sql("SELECT token_hash FROM api_tokens")]
    assert token not in stored and len(stored[0]) == 64
    for bad in (None, "", "ss_wrong"):
        with pytest.raises(AuthError):
            store.authenticate(bad)


def test_study_lifecycle_and_isolation(store: Store, minimal_spec: dict) -> None:
    alice, _ = store.issue_token("alice")
    bob, _ = store.issue_token("bob")
    study = store.create_study(alice.id, parse_spec(minimal_spec))
    assert study.state == "pending" and study.owner == "alice"
    with pytest.raises(NotFoundError):
        store.get_study(study.id, owner_id=bob.id)
    assert store.list_studies(owner_id=bob.id) == []
    claimed = store.claim_study(study.id)
    assert claimed is not None and claimed.state == "running"
    assert store.claim_study(study.id) is None  # claimed exactly once
    assert store.request_stop(study.id, owner_id=alice.id).stop_requested
    assert store.finish_study(study.id, "stopped").state == "stopped"
    with pytest.raises(ConflictError):
        store.request_stop(study.id, owner_id=alice.id)


def test_pending_study_stops_at_once(store: Store, minimal_spec: dict) -> None:
    alice, _ = store.issue_token("alice")
    study = store.create_study(alice.id, parse_spec(minimal_spec))
    assert store.request_stop(study.id).state == "stopped"


def test_reports_are_stored_once_and_best_is_the_max(store: Store, minimal_spec: dict) -> None:
    alice, _ = store.issue_token("alice")
    study = store.create_study(alice.id, parse_spec(minimal_spec))
    t0 = store.start_trial(study.id, ray_trial_id="r0", config={"lr": 0.01})
    t1 = store.start_trial(study.id, ray_trial_id="r1", config={"lr": 0.02})
    assert (t0.number, t1.number) == (0, 1)
    store.add_report(t0.id, epoch=1, objective=0.5, metrics={"avg_dev_score": 0.5})
    store.add_report(t0.id, epoch=2, objective=0.7, metrics={"avg_dev_score": 0.7})
    store.attach_checkpoint(t0.id, path="/ckpt/t0-e2")
    store.add_report(t0.id, epoch=3, objective=0.65, metrics={"avg_dev_score": 0.65})
    store.attach_checkpoint(t0.id, path="/ckpt/t0-e3")  # latest, not best: the trial keeps e2's
    assert store.get_trial(study.id, t0.id).checkpoint_path == "/ckpt/t0-e2"
    store.add_report(t1.id, epoch=1, objective=0.6, metrics={"avg_dev_score": 0.6})
    again = store.add_report(t0.id, epoch=2, objective=0.99, metrics={})  # a replay changes nothing
    assert again.objective == 0.7
    reports = store.list_reports(study.id, t0.id)
    assert [(r.epoch, r.objective) for r in reports] == [(1, 0.5), (2, 0.7), (3, 0.65)]
    assert [r.checkpoint_path for r in reports] == [None, "/ckpt/t0-e2", "/ckpt/t0-e3"]
    trial, report = store.best_trial(study.id)  # type: ignore[misc]
    assert (trial.id, report.epoch, report.objective) == (t0.id, 2, 0.7)
    assert trial.best_objective == 0.7
    assert store.trial_counts(study.id)["running"] == 2
    assert store.mark_unfinished_trials(study.id, "stopped") == 2


def test_a_tie_for_best_goes_to_the_report_that_kept_its_checkpoint(store: Store, minimal_spec: dict) -> None:
    alice, _ = store.issue_token("alice")
    study = store.create_study(alice.id, parse_spec(minimal_spec))
    t = store.start_trial(study.id, ray_trial_id="r0", config={})
    store.add_report(t.id, epoch=1, objective=0.75, metrics={}, checkpoint_path="/ckpt/e1")
    store.add_report(t.id, epoch=2, objective=0.75, metrics={}, checkpoint_path="/ckpt/e2")  # a tie: e2 is kept, e1 forgotten
    assert [r.checkpoint_path for r in store.list_reports(study.id, t.id)] == [None, "/ckpt/e2"]
    trial, report = store.best_trial(study.id)  # type: ignore[misc]
    assert (report.epoch, report.checkpoint_path, trial.checkpoint_path) == (2, "/ckpt/e2", "/ckpt/e2")


def test_a_report_and_its_checkpoint_are_written_together(store: Store, minimal_spec: dict) -> None:
    alice, _ = store.issue_token("alice")
    study = store.create_study(alice.id, parse_spec(minimal_spec))
    t = store.start_trial(study.id, ray_trial_id="r0", config={})
    store.add_report(t.id, epoch=1, objective=0.5, metrics={}, checkpoint_path="/ckpt/e1")
    store.add_report(t.id, epoch=2, objective=0.4, metrics={}, checkpoint_path="/ckpt/e2")  # latest, not best
    assert store.get_trial(study.id, t.id).checkpoint_path == "/ckpt/e1"
    store.add_report(t.id, epoch=3, objective=0.8, metrics={}, checkpoint_path="/ckpt/e3")  # new best
    assert store.get_trial(study.id, t.id).checkpoint_path == "/ckpt/e3"
    # Ray keeps only the latest and the best: e1 and e2 are gone, so are their paths.
    assert [r.checkpoint_path for r in store.list_reports(study.id, t.id)] == [None, None, "/ckpt/e3"]
    # A replay (a restored trial redoing epoch 3) keeps the stored values but its new checkpoint.
    again = store.add_report(t.id, epoch=3, objective=0.1, metrics={}, checkpoint_path="/ckpt/e3-again")
    assert (again.objective, again.checkpoint_path) == (0.8, "/ckpt/e3-again")
    assert store.get_trial(study.id, t.id).checkpoint_path == "/ckpt/e3-again"


def test_minimise_mode_picks_the_lowest(store: Store, minimal_spec: dict) -> None:
    alice, _ = store.issue_token("alice")
    spec = parse_spec({**minimal_spec, "search": {"metric": "train_loss", "mode": "min"}})
    study = store.create_study(alice.id, spec)
    t = store.start_trial(study.id, ray_trial_id="r", config={})
    store.add_report(t.id, epoch=1, objective=0.9, metrics={}, mode="min")
    store.add_report(t.id, epoch=2, objective=0.3, metrics={}, mode="min")
    assert store.best_trial(study.id)[1].objective == 0.3  # type: ignore[index]
    assert store.get_trial(study.id, t.id).best_objective == 0.3


def test_retry_opens_an_attempt_and_restore_continues_it(store: Store, minimal_spec: dict) -> None:
    alice, _ = store.issue_token("alice")
    study = store.create_study(alice.id, parse_spec(minimal_spec))
    t = store.start_trial(study.id, ray_trial_id="r", config={})
    store.add_report(t.id, epoch=1, objective=0.1, metrics={})
    t = store.retry_trial(t.id, error="worker died: boom")
    assert (t.attempt, t.state) == (2, "pending")
    t = store.start_trial(study.id, ray_trial_id="r", config={})
    assert (t.attempt, t.state) == (2, "running")
    store.add_report(t.id, epoch=1, objective=0.2, metrics={})
    # a restore after a control-plane restart continues the same attempt: a replayed epoch is dropped
    t = store.start_trial(study.id, ray_trial_id="r", config={})
    assert t.attempt == 2
    store.add_report(t.id, epoch=1, objective=0.9, metrics={})
    store.add_report(t.id, epoch=2, objective=0.3, metrics={})
    t = store.finish_trial(t.id, "completed")
    assert [(r.attempt, r.epoch, r.objective) for r in store.list_reports(study.id, t.id)] == [(1, 1, 0.1), (2, 1, 0.2), (2, 2, 0.3)]
    assert [(a.attempt, a.state, a.error) for a in t.attempts] == [(1, "failed", "worker died: boom"), (2, "completed", None)]


def test_pause_resume_and_requeue_after_a_crash(store: Store, minimal_spec: dict) -> None:
    alice, _ = store.issue_token("alice")
    pending = store.create_study(alice.id, parse_spec(minimal_spec))
    assert store.request_pause(pending.id).state == "paused"
    assert store.request_resume(pending.id).state == "pending"
    with pytest.raises(ConflictError):
        store.request_resume(pending.id)
    running = store.claim_study(pending.id)
    assert running is not None and running.state == "running"
    assert store.claim_study(pending.id) is None  # claimed exactly once
    t = store.start_trial(running.id, ray_trial_id="r", config={})
    assert store.request_pause(running.id).control == "pause"
    assert store.study_control(running.id) == (False, "pause")
    paused = store.pause_study(running.id)
    assert paused.state == "paused" and paused.control is None
    assert store.get_trial(running.id, t.id).state == "paused"
    store.request_resume(running.id)
    store.claim_study(running.id)
    # the control plane dies while it runs: on restart the study is queued again
    requeued = store.requeue_interrupted()
    assert [(s.id, s.state, s.restarts) for s in requeued] == [(running.id, "pending", 1)]
    stopped = store.request_stop(running.id)
    assert stopped.state == "stopped"
    assert store.get_trial(running.id, t.id).state == "stopped"


def test_store_pickles_as_its_url(store: Store, minimal_spec: dict) -> None:
    import pickle

    alice, _ = store.issue_token("alice")
    study = store.create_study(alice.id, parse_spec(minimal_spec))
    copy = pickle.loads(pickle.dumps(store))
    assert copy.get_study(study.id).name == study.name
    copy.close()


def test_tally_trials_counts_states_and_best_per_study_mode(store: Store, minimal_spec: dict) -> None:
    alice, _ = store.issue_token("alice")
    high = store.create_study(alice.id, parse_spec(minimal_spec))
    low = store.create_study(alice.id, parse_spec({**minimal_spec, "search": {"metric": "train_loss", "mode": "min"}}))
    empty = store.create_study(alice.id, parse_spec(minimal_spec))
    for study, mode, objectives in ((high, "max", (0.4, 0.9, 0.6)), (low, "min", (0.4, 0.9, 0.6))):
        for n, value in enumerate(objectives):
            trial = store.start_trial(study.id, ray_trial_id=f"r{n}", config={})
            store.add_report(trial.id, epoch=1, objective=value, metrics={}, mode=mode)
            if n == 0:
                store.finish_trial(trial.id, "completed")
    tallies = store.tally_trials([high.id, low.id, empty.id, high.id])
    assert set(tallies) == {high.id, low.id, empty.id}
    assert tallies[high.id].best_objective == 0.9 and tallies[low.id].best_objective == 0.4
    assert (tallies[high.id].counts["completed"], tallies[high.id].counts["running"]) == (1, 2)
    assert tallies[empty.id].best_objective is None and sum(tallies[empty.id].counts.values()) == 0
    assert tallies[high.id].best_objective == store.best_trial(high.id)[1].objective  # type: ignore[index]
    assert store.tally_trials([]) == {}


def test_listing_trials_costs_the_same_queries_for_two_or_twenty(store: Store, minimal_spec: dict) -> None:
    """The API's list routes are read constantly: a query per trial made them slow down as
    studies grew. Counted on the engine itself, so nothing of ours is faked."""
    from sqlalchemy import event

    alice, _ = store.issue_token("alice")
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def queries_to_list(study_id: int) -> int:
        statements.clear()
        trials = store.list_trials(study_id, owner_id=alice.id)
        assert all(t.num_reports == 2 and [a.attempt for a in t.attempts] == [1, 2] for t in trials)
        return len(statements)

    counts = []
    for size in (2, 20):
        study = store.create_study(alice.id, parse_spec(minimal_spec))
        for n in range(size):
            trial = store.start_trial(study.id, ray_trial_id=f"r{n}", config={})
            store.add_report(trial.id, epoch=1, objective=0.5, metrics={})
            store.retry_trial(trial.id, error="worker died")
            store.start_trial(study.id, ray_trial_id=f"r{n}", config={})
            store.add_report(trial.id, epoch=1, objective=0.6, metrics={})
        counts.append(queries_to_list(study.id))
    assert counts[0] == counts[1] <= 5


def test_a_trials_end_is_written_once(store: Store, minimal_spec: dict) -> None:
    """After a crash Tune may report the end of a trial SQL already holds as finished:
    the row keeps its first end (state, time, attempt)."""
    alice, _ = store.issue_token("alice")
    study = store.create_study(alice.id, parse_spec(minimal_spec))
    t = store.start_trial(study.id, ray_trial_id="r", config={})
    done = store.finish_trial(t.id, "completed")
    again = store.finish_trial(t.id, "failed", error="late news")
    assert again == done
    assert (again.state, again.error, again.finished_at) == ("completed", None, done.finished_at)
    assert [(a.attempt, a.state) for a in again.attempts] == [(1, "completed")]


def test_trials_a_restored_experiment_does_not_know_are_settled(store: Store, minimal_spec: dict) -> None:
    alice, _ = store.issue_token("alice")
    study = store.create_study(alice.id, parse_spec(minimal_spec))
    kept = store.start_trial(study.id, ray_trial_id="known", config={})
    finished = store.start_trial(study.id, ray_trial_id="finished-unknown", config={})
    store.finish_trial(finished.id, "completed")
    reported = store.start_trial(study.id, ray_trial_id="reported", config={})
    store.add_report(reported.id, epoch=1, objective=0.4, metrics={})
    silent = store.start_trial(study.id, ray_trial_id="silent", config={})  # started, never reported
    before = store.forget_unknown_trials(study.id, known_ray_ids={"known"})
    assert sorted(t.ray_trial_id for t in before) == ["reported", "silent"]  # finished trials are left alone
    trials = {t.ray_trial_id: t for t in store.list_trials(study.id)}
    assert set(trials) == {"known", "finished-unknown", "reported"}  # the silent one is gone
    assert trials["known"].state == "running" and trials["finished-unknown"].state == "completed"
    assert trials["reported"].state == "failed" and "lost" in (trials["reported"].error or "")
    assert [r.epoch for r in store.list_reports(study.id, trials["reported"].id)] == [1]  # its report is kept
    assert store.start_trial(study.id, ray_trial_id="next", config={}).number == silent.number  # the newest trial's number is reused
    assert kept.id == trials["known"].id
    assert store.forget_unknown_trials(study.id, known_ray_ids={"known", "next"}) == []
