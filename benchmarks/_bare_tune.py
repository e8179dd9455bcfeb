"""The bare Ray Tune script ``overhead.py`` compares searchsvc against (run in its own process, ``--bare-run``).

What a Ray Tune user would write around ``workers.run_trial``: the same searcher (``make_searcher`` on the
same ``SearchSpec``), the same trainable body as ``searchsvc/dispatch/trainable.py`` and the same checkpoint
settings; no SQL, no API. Kept apart from ``overhead.py`` so that script reads as the measurement.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any


def _bare_trainable(spec_data: dict[str, Any]):  # type: ignore[no-untyped-def]
    """The trial function: spec parsed on the worker, one ``tune.report`` with the checkpoint directory per
    epoch, as ``searchsvc/dispatch/trainable.py`` does, without anything of searchsvc's."""
    from ray import tune

    def bare_trial(config: dict[str, Any]) -> None:
        from searchsvc.spec import parse_spec
        from workers import run_trial

        trial_spec = parse_spec(spec_data)

        def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
            checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
            tune.report(dict(metrics), checkpoint=checkpoint)

        with tempfile.TemporaryDirectory(prefix="bare-trial-") as workdir:
            run_trial(dict(config), spec=trial_spec, report=report, workdir=f"{workdir}/run")

    return tune.with_resources(bare_trial, {"cpu": 1})


def bare_run(spec_path: Path, result_path: Path, storage: Path, cpus: int) -> int:
    """Start a local Ray (not timed), then time one Tune experiment of the spec's trials; the timing goes to
    ``result_path`` as JSON. Exit status 0."""
    import ray
    from ray import tune

    from searchsvc.dispatch.searchers import make_searcher
    from searchsvc.dispatch.space import tune_space
    from searchsvc.local_server import free_port
    from searchsvc.spec import parse_spec

    spec_data = json.loads(spec_path.read_text())
    spec = parse_spec(spec_data)
    search = spec.search
    started = time.perf_counter()
    # The same kind of Ray as `searchsvc serve` starts (local, loopback, with a dashboard).
    ray.init(address="local", num_cpus=cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=free_port(), _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    ray_start_s = time.perf_counter() - started
    started = time.perf_counter()
    tuner = tune.Tuner(
        _bare_trainable(spec_data),
        param_space=tune_space(search),
        tune_config=tune.TuneConfig(search_alg=make_searcher(search), num_samples=search.num_trials,
                                    metric=search.metric, mode=search.mode),
        run_config=tune.RunConfig(
            name="bare", storage_path=str(storage), verbose=1,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=search.metric,
                                                    checkpoint_score_order=search.mode),
            failure_config=tune.FailureConfig(max_failures=search.max_retries),
        ),
    )
    grid = tuner.fit()
    wall_s = time.perf_counter() - started
    errors = grid.num_errors
    result_path.write_text(json.dumps({"wall_s": wall_s, "startup_s": ray_start_s, "completed": len(grid) - errors,
                                       "failed": errors}))
    ray.shutdown()
    return 0
