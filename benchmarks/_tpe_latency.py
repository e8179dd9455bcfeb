"""TPE suggestion latency, for ``overhead.py``: how long the study's searcher takes to suggest a trial after N
finished ones (not a benchmark itself; kept apart so ``overhead.py`` reads as its wall-time measurement)."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

from _control_plane import mean_std, percentile, study_spec
from tqdm import tqdm


def _synthetic_objective(config: dict[str, Any], rng: random.Random) -> float:
    """A smooth score with a peak at lr = 1e-2, rank 4, prefix 5, plus a little noise."""
    return (1.0 - 0.3 * (math.log10(config["lr"]) + 2.0) ** 2 - 0.02 * abs(config["prefix_length"] - 5)
            + (0.05 if config["lora_rank"] == 4 else 0.0) + rng.gauss(0.0, 0.02))


def tpe_latency(points: list[int], suggestions: int, *, storage: str, folder: Path) -> dict[str, Any]:
    """Median/p99 of ``suggest()`` after each of ``points`` finished trials. Timed suggestions
    are told as failed, which TPE ignores, so every one of them sees the same history."""
    import optuna

    from searchsvc.dispatch.searchers import make_searcher
    from searchsvc.dispatch.space import tune_space
    from searchsvc.spec import SearchSpec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    total = max(points) + suggestions * len(points)
    # The study's SearchSpec alone: the searcher needs no model or task folders.
    search = SearchSpec.model_validate(
        study_spec(name="tpe", model="", tasks=[], num_trials=total, max_concurrent=1, max_epochs=1)["search"])
    rdb = None
    if storage == "sqlite":
        from searchsvc.dispatch.optuna_storage import make_optuna_storage

        rdb = make_optuna_storage(f"sqlite:///{folder / 'tpe.db'}")
    searcher = make_searcher(search, max_concurrent=1, storage=rdb, study_name=f"tpe-{storage}" if rdb else None)
    searcher.set_search_properties(search.metric, search.mode, tune_space(search))
    rng = random.Random(0)
    finished = 0
    number = 0
    out: dict[str, Any] = {}
    with tqdm(total=max(points), desc=f"TPE history ({storage})", unit="trial", leave=False) as bar:
        for point in sorted(points):
            while finished < point:
                trial_id = f"t{number}"
                number += 1
                config = searcher.suggest(trial_id)
                searcher.on_trial_complete(trial_id, result={search.metric: _synthetic_objective(config, rng)})
                finished += 1
                bar.update()
            times = []
            for _ in range(suggestions):
                trial_id = f"t{number}"
                number += 1
                started = time.perf_counter()
                config = searcher.suggest(trial_id)
                times.append(time.perf_counter() - started)
                if not isinstance(config, dict):
                    raise RuntimeError(f"TPE gave no configuration after {finished} trials: {config!r}")
                searcher.on_trial_complete(trial_id, error=True)
            out[str(point)] = {"median_ms": 1000 * percentile(times, 50), "p99_ms": 1000 * percentile(times, 99),
                               "mean_ms": 1000 * mean_std(times)[0], "max_ms": 1000 * max(times), "n": len(times)}
    return out
