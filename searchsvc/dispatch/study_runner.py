"""Run one study as one Ray Tune experiment, in its own process.

The dispatcher starts ``python -m searchsvc.dispatch.study_runner STUDY_ID`` for every
claimed study. One driver process per study keeps Tune's global state apart between
studies and lets a study die without taking the API down.

Restore: Tune saves the experiment (trials, searcher, scheduler) under the study's
storage folder as it runs. When a runner starts and finds that state (the study was
paused, or the control plane died), it restores it: unfinished trials continue from
their last checkpoint, and the searcher keeps its history (Optuna's also lives in SQL,
see ``optuna_storage``). Tune's saved state may lag behind SQL after a crash; SQL wins:
before any trial starts, the scheduler ends every trial SQL holds as finished and
settles those Tune never recorded (see ``reconcile``).

Database outages: the runner's store and Optuna storage retry a call while the database
is unreachable (``SEARCHSVC_RUNNER_DB_RETRY_S``, default 10 minutes), holding Tune's loop
meanwhile: trials keep training on their workers and their results queue in Ray, so no
report or trial state is lost and none is written twice.

Exit codes: 0 the study reached a final state or was paused; 1 the runner failed (the
study is marked failed); 3 interrupted with work left (the study stays running, so the
next control plane restores it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from searchsvc.artifacts import artifact_name, pack_once
from searchsvc.errors import summarize
from searchsvc.signals import keep_sigterm_handler, sigterm_as_interrupt
from searchsvc.spec import OBJECTIVE_KEY, StudySpec, parse_spec
from searchsvc.store import Store

log = logging.getLogger("searchsvc.runner")
EXIT_INTERRUPTED = 3
# How long the runner's writes (reports, trial states, Optuna's history) wait out a
# database outage before the runner gives up; the API itself answers 503 at once.
DB_RETRY_ENV = "SEARCHSVC_RUNNER_DB_RETRY_S"
DEFAULT_DB_RETRY_S = 600.0


def experiment_name(study_id: int) -> str:
    """How a study is named in Ray (results folder, dashboard): recognisable by its id."""
    return f"searchsvc-study-{study_id}"


def _scheduler(store: Store, study_id: int, spec: StudySpec):  # type: ignore[no-untyped-def]
    """The study's trial scheduler, FIFO or ASHA on epochs (``training_iteration``: one
    report per epoch), which also reconciles a restored experiment with SQL before it
    starts any trial (see ``reconcile``).

    ASHA works with any searcher (BOHB-like with TPE: many trials, most stopped after a
    rung). When ASHA stops a trial, Tune tells the searcher ``on_trial_complete`` with the
    trial's last result, so TPE learns the value it reached at the rung where it was cut
    (tests/dispatch/test_asha_tpe.py); for ``max`` (or ``min``) metrics that improve with
    epochs, a trial cut early ranks below one that ran on, as it should.
    """
    from searchsvc.dispatch.reconcile import Reconciler, ReconcilingASHAScheduler, ReconcilingFIFOScheduler

    scheduler: ReconcilingASHAScheduler | ReconcilingFIFOScheduler
    if spec.search.scheduler == "asha":
        scheduler = ReconcilingASHAScheduler(
            time_attr="training_iteration",
            max_t=spec.train.max_epochs,
            grace_period=min(spec.search.grace_period, spec.train.max_epochs),
            reduction_factor=spec.search.reduction_factor,
        )
    else:
        scheduler = ReconcilingFIFOScheduler()
    scheduler.reconciler = Reconciler(store, study_id, metric=OBJECTIVE_KEY)
    return scheduler


def build_tuner(store: Store, study_id: int, spec: StudySpec, *, storage_dir: Path, max_concurrent: int | None):  # type: ignore[no-untyped-def]
    """A new Tuner for the study, or the restored one if Tune saved its state before."""
    from ray import tune

    from searchsvc.dispatch.callbacks import StopWhenRequested, StoreCallback
    from searchsvc.dispatch.naming import TrialNamer
    from searchsvc.dispatch.optuna_attrs import TrialAnnotator
    from searchsvc.dispatch.optuna_storage import make_optuna_storage
    from searchsvc.dispatch.searchers import make_searcher
    from searchsvc.dispatch.space import param_space
    from searchsvc.dispatch.trainable import make_trainable

    trainable = make_trainable(spec)
    path = storage_dir / experiment_name(study_id)
    if tune.Tuner.can_restore(str(path)):
        log.info("restoring study %s from %s", study_id, path)
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=False)
    search = spec.search
    database_url = store.engine.url.render_as_string(hide_password=False)
    storage = (make_optuna_storage(database_url, retry_unavailable_s=store.retry_unavailable_s)
               if search.algorithm in ("tpe", "random") else None)
    return tune.Tuner(
        trainable,
        param_space=param_space(search),  # empty when the searcher owns a conditional space
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(search, max_concurrent=max_concurrent, storage=storage, study_name=experiment_name(study_id),
                                     annotate=TrialAnnotator(store, study_id)),
            scheduler=_scheduler(store, study_id, spec),
            num_samples=search.num_trials,
            metric=OBJECTIVE_KEY,  # search.metric as the trial measured it, on the selection split
            mode=search.mode,
            trial_name_creator=TrialNamer(study_id),  # study-7/trial-3 in Ray's dashboard
        ),
        run_config=tune.RunConfig(
            name=experiment_name(study_id),
            storage_path=str(storage_dir),
            callbacks=[StoreCallback(store, study_id, metric=OBJECTIVE_KEY, mode=search.mode)],
            stop=StopWhenRequested(store, study_id),
            # Ray keeps the latest checkpoint (to resume from) besides the best one (the artifact).
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=OBJECTIVE_KEY, checkpoint_score_order=search.mode
            ),
            failure_config=tune.FailureConfig(max_failures=search.max_retries),
            verbose=1,
        ),
    )


def run_study(store: Store, study_id: int, *, ray_address: str | None, storage_dir: Path, max_concurrent: int | None = None) -> str:
    """Drive the study's Tune run and record how it ended; returns the study's state, or
    ``"interrupted"`` when Tune was interrupted with work left (the state stays running)."""
    # Save Tune's experiment state often: a restore replays at most this much.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    import ray

    from searchsvc.dispatch.resources import cluster_nodes, unsatisfiable

    study = store.get_study(study_id)
    spec = parse_spec(study.spec)
    if not ray.is_initialized():
        with keep_sigterm_handler():
            ray.init(address=ray_address, log_to_driver=False, configure_logging=False)
    sigterm_as_interrupt()  # a SIGTERM saves Tune's state and leaves the study to resume, as Ctrl-C does
    problem = unsatisfiable(spec.resources, cluster_nodes())
    if problem:
        store.mark_unfinished_trials(study_id, "failed", error=problem)
        return store.finish_study(study_id, "failed", error=problem).state
    build_tuner(store, study_id, spec, storage_dir=storage_dir, max_concurrent=max_concurrent).fit()
    return record_outcome(store, study_id, planned=spec.search.num_trials, artifacts_dir=storage_dir.parent / "artifacts")


def export_best(store: Store, study_id: int, artifacts_dir: Path) -> str | None:
    """Export the best trial's best checkpoint as the study's artifact; returns an error
    text if that failed (the study's result stands either way)."""
    from searchsvc.dispatch.naming import export_task_name
    from searchsvc.dispatch.trainable import export_on_ray

    best = store.best_trial(study_id)
    if best is None:
        return None
    trial, report = best
    checkpoint = report.checkpoint_path or trial.checkpoint_path
    if not checkpoint or not Path(checkpoint).is_dir():
        return "artifact not exported: the best trial's checkpoint is not on the machine that runs the study"
    try:
        path = export_on_ray(checkpoint, str(artifacts_dir / f"study-{study_id}"), task_name=export_task_name(study_id))
        pack_once(Path(path), name=artifact_name(study_id))  # before the path is known: a download finds it packed
    except Exception as exc:  # reported on the study, never fatal to it
        log.exception("study %s: export failed", study_id)
        return f"artifact export failed: {summarize(f'{type(exc).__name__}: {exc}')}"
    store.set_artifact(study_id, path)
    log.info("study %s: artifact at %s", study_id, path)
    return None


def record_outcome(store: Store, study_id: int, *, planned: int, artifacts_dir: Path | None = None) -> str:
    stop, control = store.study_control(study_id)
    if stop:
        store.mark_unfinished_trials(study_id, "stopped")
        problem = export_best(store, study_id, artifacts_dir) if artifacts_dir else None
        return store.finish_study(study_id, "stopped", error=problem).state
    if control == "pause":
        return store.pause_study(study_id).state
    counts = store.trial_counts(study_id)
    unfinished = counts["pending"] + counts["running"] + counts["paused"]
    if unfinished or sum(counts.values()) < planned:
        return "interrupted"
    if counts["completed"] == 0 and counts["failed"] > 0:
        # Single failed trials do not fail a study; a study in which every trial failed
        # found nothing, and saying "completed" would hide a broken setup.
        first_error = next((t.error for t in store.list_trials(study_id) if t.error), "") or ""
        error = f"all {counts['failed']} trials failed; the first: {summarize(first_error)}"
        return store.finish_study(study_id, "failed", error=error).state
    problem = export_best(store, study_id, artifacts_dir) if artifacts_dir else None
    return store.finish_study(study_id, "completed", error=problem).state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one searchsvc study on Ray Tune (started by the dispatcher).")
    parser.add_argument("study_id", type=int)
    parser.add_argument("--database-url", default=os.environ.get("SEARCHSVC_DATABASE_URL"))
    parser.add_argument("--ray-address", default=os.environ.get("SEARCHSVC_RAY_ADDRESS"))
    parser.add_argument("--storage-dir", required=True, type=Path)
    parser.add_argument("--max-concurrent", type=int, default=None, help="cap below the spec's max_concurrent")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.database_url:
        parser.error("--database-url or SEARCHSVC_DATABASE_URL is required")
    store = Store.open(args.database_url, apply_migrations=False,
                       retry_unavailable_s=float(os.environ.get(DB_RETRY_ENV, DEFAULT_DB_RETRY_S)))
    try:
        state = run_study(store, args.study_id, ray_address=args.ray_address, storage_dir=args.storage_dir,
                          max_concurrent=args.max_concurrent)
        log.info("study %s: %s", args.study_id, state)
        return EXIT_INTERRUPTED if state == "interrupted" else 0
    except Exception as exc:
        # The traceback stays in this runner's log (the server's data folder); the study
        # records one line, which its owner reads through the API.
        log.exception("study %s failed", args.study_id)
        store.mark_unfinished_trials(args.study_id, "failed", error="the study's runner failed")
        error = f"the study's runner failed: {summarize(f'{type(exc).__name__}: {exc}')}"
        store.finish_study(args.study_id, "failed", error=error)
        return 1
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
