"""Convert the spec's search space into Ray Tune domains.

Both searchers we use (Optuna and Hyperopt through Ray Tune) accept Tune domains, so
the conversion lives in one place and every algorithm sees the same space.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from searchsvc.spec import SearchSpec


def tune_space(search: SearchSpec) -> dict[str, Any]:
    space: dict[str, Any] = {}
    for name, dim in search.space.items():
        if dim.type == "uniform":
            space[name] = tune.uniform(dim.low, dim.high)
        elif dim.type == "loguniform":
            space[name] = tune.loguniform(dim.low, dim.high)
        elif dim.type == "int":
            # Tune's integer upper bounds are exclusive; the spec's are inclusive.
            space[name] = tune.lograndint(dim.low, dim.high + 1) if dim.log else tune.randint(dim.low, dim.high + 1)
        elif dim.type == "choice":
            space[name] = tune.choice(list(dim.values))
        else:  # pragma: no cover - the spec's discriminated union makes this unreachable
            raise ValueError(f"search.space.{name}: unsupported type {dim.type!r}")
    return space
