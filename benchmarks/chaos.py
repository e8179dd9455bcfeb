"""Chaos: studies on a tiny model while the service, trial workers and the database are
killed at random moments drawn from a seed. Does anything get lost, doubled or re-run?

    python benchmarks/chaos.py                 # 8 studies, 4 faults each, PostgreSQL: ~12 min here
    python benchmarks/chaos.py --smoke         # 1 study, 3 faults (one of each kind): ~1.5 min

Faults, one at a time, each at a random moment (1-6 s after the study's last step):
- ``service``: ``kill -9`` of ``searchsvc serve`` (API, dispatcher, study runner, its Ray),
  started again at once;
- ``worker``: ``kill -9`` of the Ray worker process training a trial (the trial is retried
  from its last checkpoint, as a new attempt);
- ``database``: PostgreSQL unreachable for 5-15 s (the service talks to it through a TCP
  proxy that is cut: every connection closed, new ones refused).

What SQL holds is read before every fault and at the end, and compared: a report seen
before and gone after is *lost*; an epoch stored twice for a trial is *duplicated*; a trial
that had finished before a fault and whose row or reports changed after is *restarted*; a
study that does not end ``completed`` with its planned trials counts as not completed.
Recovery time: for a service kill, from the kill (the restart included) to the study's
next step (a trial starts, reports or ends); for a worker, from the kill to the trial's
first report from its retry; for the database, from the proxy's restoring to the next step. Writes ``chaos.json``, ``.md``, ``.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from _control_plane import (
    ROOT,
    add_output_options,
    fresh_database,
    issue_token,
    percentile,
    publish,
    pyplot,
    refuse_unknown_keys,
    replot,
    report_tail,
    save_figure,
    setup_info,
    study_spec,
    tiny_workload,
)

NAME = "chaos"
KINDS = ("service", "worker", "database")
ENDED = ("completed", "failed", "stopped")
Snapshot = dict[int, tuple[Any, list[tuple]]]  # trial id -> (trial row, its reports)


def snapshot(store: Any, study_id: int) -> Snapshot:
    return {t.id: (t, [(r.attempt, r.epoch, r.objective, r.created_at) for r in store.list_reports(study_id, t.id)])
            for t in store.list_trials(study_id)}


def progressed(before: Snapshot, now: Snapshot) -> bool:
    return any(i not in before or (t.state, len(r)) != (before[i][0].state, len(before[i][1])) for i, (t, r) in now.items())


def _killable(now: Snapshot) -> Any:
    """A running trial whose last report is from its current attempt (its worker is alive), or None."""
    return next((t for t, r in now.values() if t.state == "running" and r and r[-1][0] == t.attempt), None)


def moved_on(store: Any, study_id: int, before: Snapshot) -> bool:
    """The study took its next step since ``before``, or ended (its last step)."""
    return store.get_study(study_id).state in ENDED or progressed(before, snapshot(store, study_id))


def account(at_faults: list[Snapshot], final: Snapshot) -> dict[str, int]:
    """Reports lost and duplicated, finished trials restarted, between the snapshots and the end."""
    unfinished = ("pending", "running", "paused")
    lost: set[tuple] = set()
    restarted: set[int] = set()
    for before in at_faults:
        for trial_id, (trial, reports) in before.items():
            if trial_id not in final:
                lost.update((trial_id, r) for r in reports)  # a row that vanished takes its reports with it
                continue
            now, now_reports = final[trial_id]
            lost.update((trial_id, r) for r in reports if r not in now_reports)
            if trial.state not in unfinished and (now, now_reports) != (trial, reports):
                restarted.add(trial_id)
    duplicated = sum(len(reports) - len({r[1] for r in reports}) for _, reports in final.values())
    return {"reports_lost": len(lost), "reports_duplicated": duplicated, "finished_trials_restarted": len(restarted)}


def _wait(condition: Any, timeout_s: float, poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return False


def run_study(index: int, rng: random.Random, *, root: Path, backend: str, faults: list[str], model: str,
              tasks: list[dict[str, Any]], num_trials: int, max_epochs: int) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    from searchsvc.client import Client
    from searchsvc.local_server import LocalServer, free_port
    from searchsvc.store import Store
    from tests.utils.tcp_proxy import TcpProxy

    with fresh_database(backend, root / "db") as url:
        proxy = None
        served_url = url
        if backend == "postgresql":
            direct = make_url(url)
            proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432).start()
            served_url = direct.set(port=proxy.port).render_as_string(hide_password=False)
        token = issue_token(url)
        store = Store.open(url, apply_migrations=False)
        data_dir = root / f"study-{index}"

        def server() -> LocalServer:
            # the operator's setting: specs may name the workload's model and task folders (under root)
            return LocalServer(database_url=served_url, data_dir=data_dir, ray_num_cpus=2, dashboard_port=free_port(),
                               extra_env={"SEARCHSVC_ALLOWED_PATHS": str(Path(model).resolve().parent)})

        current = server().start()
        try:
            with Client(current.url, token) as client:
                spec = study_spec(name=f"chaos-{index}", model=model, tasks=tasks, num_trials=num_trials, max_concurrent=1,
                                  max_epochs=max_epochs)
                spec["search"]["max_retries"] = len(faults)
                study_id = client.create_study(spec).id
            at_faults: list[Snapshot] = []
            events: list[dict[str, Any]] = []
            last = snapshot(store, study_id)
            for kind in faults:
                delay = rng.uniform(1, 6)
                _wait(lambda: moved_on(store, study_id, last), timeout_s=120)  # noqa: B023
                time.sleep(delay)
                if kind == "worker":  # a worker to kill: one that reported for its trial's current attempt
                    _wait(lambda: _killable(snapshot(store, study_id)) is not None  # noqa: B023
                          or store.get_study(study_id).state in ENDED, timeout_s=120)  # noqa: B023
                if store.get_study(study_id).state in ENDED:
                    break
                before = snapshot(store, study_id)
                at_faults.append(before)
                if kind == "worker":
                    victim = _killable(before)
                    if victim is None:
                        events.append({"kind": kind, "skipped": "no trial running with a report"})
                        continue
                    pid = store.list_reports(study_id, victim.id)[-1].metrics.get("worker_pid")
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (OSError, TypeError, ValueError) as exc:
                        events.append({"kind": kind, "skipped": f"worker {pid}: {exc}"})
                        continue
                    ended = time.monotonic()
                    # recovered when the trial, retried from its checkpoint, reports again (or the study ends)
                    ok = _wait(lambda: store.get_study(study_id).state in ENDED  # noqa: B023
                               or store.get_trial(study_id, victim.id).state in ENDED  # it had just finished  # noqa: B023
                               or any(r.attempt > victim.attempt for r in store.list_reports(study_id, victim.id)),  # noqa: B023
                               timeout_s=300)
                    events.append({"kind": kind, "after_s": round(delay, 1),
                                   "recovery_s": round(time.monotonic() - ended, 2) if ok else None})
                    last = snapshot(store, study_id)
                    continue
                elif kind == "service":
                    current.process.kill()
                    current.process.wait()
                    current.stop()
                    ended = time.monotonic()
                    current = server().start()
                elif kind == "database" and proxy is not None:
                    proxy.cut()
                    time.sleep(rng.uniform(5, 15))
                    proxy.restore()
                    ended = time.monotonic()
                else:
                    events.append({"kind": kind, "skipped": "the database is SQLite: no outage to stage"})
                    continue
                ok = _wait(lambda: moved_on(store, study_id, before), timeout_s=300)  # noqa: B023
                events.append({"kind": kind, "after_s": round(delay, 1), "recovery_s": round(time.monotonic() - ended, 2) if ok else None})
                last = snapshot(store, study_id)
            _wait(lambda: store.get_study(study_id).state in ENDED, timeout_s=900, poll_s=0.5)
            final = snapshot(store, study_id)
            study = store.get_study(study_id)
        finally:
            current.stop()  # whichever server runs now
            store.close()
            if proxy is not None:
                proxy.close()
    counts = account(at_faults, final)
    completed = study.state == "completed" and len(final) == num_trials and all(t.state == "completed" for t, _ in final.values())
    print(f"study {index}: {study.state}, {len(final)} trials; {counts}; faults {events}", flush=True)
    return {"index": index, "state": study.state, "trials": len(final), "completed": completed, "faults": events, **counts}


def summarize(results: dict[str, Any]) -> str:
    refuse_unknown_keys(results, ("setup", "studies", "wall_seconds"), script="chaos.py")
    studies = results["studies"]
    faults = [f for s in studies for f in s["faults"] if "recovery_s" in f]
    lines = ["# Chaos: kills of the service, trial workers and the database", "",
             f"{sum(s['completed'] for s in studies)}/{len(studies)} studies completed with their planned trials; "
             f"{len(faults)} faults.", "",
             "| measure | value |", "|---|---|",
             f"| studies completed | {sum(s['completed'] for s in studies)} / {len(studies)} |",
             *[f"| {label} | {sum(s[key] for s in studies)} |" for key, label in (
                 ("reports_lost", "reports lost"), ("reports_duplicated", "reports duplicated"),
                 ("finished_trials_restarted", "finished trials restarted"))],
             "", "| fault | count | recovered | recovery median (s) | recovery max (s) |", "|---|---|---|---|---|"]
    for kind in KINDS:
        times = [f["recovery_s"] for f in faults if f["kind"] == kind]
        done = [t for t in times if t is not None]
        lines.append(f"| {kind} | {len(times)} | {len(done)} | {percentile(done, 50):.1f} | "
                     f"{max(done) if done else float('nan'):.1f} |")
    return "\n".join(lines + report_tail(results, "chaos.py")) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    data = [[f["recovery_s"] for s in results["studies"] for f in s["faults"] if f.get("kind") == kind and f.get("recovery_s")]
            for kind in KINDS]
    ax.boxplot([d or [float("nan")] for d in data], tick_labels=[f"{k} ({len(d)})" for k, d in zip(KINDS, data, strict=True)])
    ax.set_ylabel("recovery: fault's end to next step (s)")
    ax.set_title("Recovery after each kind of fault")
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1 study, one fault of each kind")
    parser.add_argument("--studies", type=int, default=None, help="studies (default 8; 1 with --smoke)")
    parser.add_argument("--faults", type=int, default=None, help="faults per study (default 4; 3 with --smoke)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="postgresql", choices=("postgresql", "sqlite"))
    add_output_options(parser)
    args = parser.parse_args(argv)
    if args.replot:
        return replot(args.out, NAME, summarize, plot)
    args.studies = args.studies or (1 if args.smoke else 8)
    args.faults = args.faults or (3 if args.smoke else 4)
    rng = random.Random(args.seed)
    setup = setup_info(smoke=args.smoke, studies=args.studies, faults=args.faults, seed=args.seed, backend=args.backend,
                       trials=4, epochs=4)
    started = time.monotonic()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="searchsvc-chaos-") as tmp:
        root = Path(tmp)
        model, tasks = tiny_workload(root)
        studies = []
        for index in range(args.studies):
            # Smoke: one of each kind; otherwise drawn from the seed.
            kinds = list(KINDS) if args.smoke else [rng.choice(KINDS) for _ in range(args.faults)]
            studies.append(run_study(index, rng, root=root, backend=args.backend, faults=kinds, model=model, tasks=tasks,
                                     num_trials=4, max_epochs=4))
    results = {"setup": setup, "studies": studies, "wall_seconds": time.monotonic() - started}
    return publish(args.out, NAME, results, summarize, plot)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
