"""Run one study as one Ray Tune experiment, in its own process.

The dispatcher starts ``python -m searchsvc.dispatch.study_runner STUDY_ID`` for every
claimed study. Running each study in its own driver process keeps Tune's global state
apart between studies, lets a study die without taking the API down, and lets the
control plane restart without killing running studies' bookkeeping.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from searchsvc.spec import parse_spec
from searchsvc.store import Store

log = logging.getLogger("searchsvc.runner")


def experiment_name(study_id: int) -> str:
    """How a study is named in Ray (results folder, dashboard): recognisable by its id."""
    return f"searchsvc-study-{study_id}"


def run_study(store: Store, study_id: int, *, ray_address: str | None, storage_dir: Path) -> str:
    """Drive the study's Tune run to the end and record its final state; returns that state."""
    import ray
    from ray import tune

    from searchsvc.dispatch.callbacks import StopWhenRequested, StoreCallback
    from searchsvc.dispatch.searchers import make_searcher
    from searchsvc.dispatch.space import tune_space
    from searchsvc.dispatch.trainable import make_trainable

    study = store.get_study(study_id)
    spec = parse_spec(study.spec)
    if not ray.is_initialized():
        ray.init(address=ray_address, log_to_driver=False, configure_logging=False)
    search = spec.search
    tuner = tune.Tuner(
        make_trainable(spec),
        param_space=tune_space(search),
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(search),
            num_samples=search.num_trials,
            metric=search.metric,
            mode=search.mode,
            max_concurrent_trials=search.max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=experiment_name(study_id),
            storage_path=str(storage_dir),
            callbacks=[StoreCallback(store, study_id, metric=search.metric, mode=search.mode)],
            stop=StopWhenRequested(store, study_id),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=1,
        ),
    )
    tuner.fit()
    if store.is_stop_requested(study_id):
        store.mark_unfinished_trials(study_id, "stopped")
        final = "stopped"
        store.finish_study(study_id, final)
        return final
    store.mark_unfinished_trials(study_id, "failed", error="the trial never reported an end")
    counts = store.trial_counts(study_id)
    if counts["completed"] == 0 and counts["failed"] > 0:
        # Single failed trials do not fail a study; a study in which every trial failed
        # found nothing, and saying "completed" would hide a broken setup.
        first_error = next((t.error for t in store.list_trials(study_id) if t.error), "") or ""
        store.finish_study(study_id, "failed", error=f"all {counts['failed']} trials failed; the first error:\n{first_error[-8000:]}")
        return "failed"
    store.finish_study(study_id, "completed")
    return "completed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one searchsvc study on Ray Tune (started by the dispatcher).")
    parser.add_argument("study_id", type=int)
    parser.add_argument("--database-url", default=os.environ.get("SEARCHSVC_DATABASE_URL"))
    parser.add_argument("--ray-address", default=os.environ.get("SEARCHSVC_RAY_ADDRESS"))
    parser.add_argument("--storage-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.database_url:
        parser.error("--database-url or SEARCHSVC_DATABASE_URL is required")
    store = Store.open(args.database_url, apply_migrations=False)
    try:
        state = run_study(store, args.study_id, ray_address=args.ray_address, storage_dir=args.storage_dir)
        log.info("study %s ended: %s", args.study_id, state)
        return 0
    except Exception:
        text = traceback.format_exc()
        log.error("study %s failed:\n%s", args.study_id, text)
        store.mark_unfinished_trials(args.study_id, "failed", error="the study's runner failed")
        store.finish_study(args.study_id, "failed", error=text[-20_000:])
        return 1
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
