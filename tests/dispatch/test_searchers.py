"""Each registered search algorithm proposes configs inside the spec's space, reproducibly."""

from __future__ import annotations

import math

import pytest

from searchsvc.dispatch.searchers import make_searcher, registered
from searchsvc.dispatch.space import tune_space
from searchsvc.spec import ALGORITHMS, parse_spec


def _spec(minimal_spec: dict, algorithm: str, seed: int = 0):  # type: ignore[no-untyped-def]
    return parse_spec({**minimal_spec, "search": {
        "algorithm": algorithm, "num_trials": 12, "max_concurrent": 12, "seed": seed,
        "space": {
            "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            "prefix_length": {"type": "int", "low": 5, "high": 6},
            "lora_rank": {"type": "choice", "values": [4, 8, 16]},
            "warmup_ratio": {"type": "uniform", "low": 0.0, "high": 0.2},
        }}})


def _suggest(spec, n: int) -> list[dict]:  # type: ignore[no-untyped-def]
    searcher = make_searcher(spec.search)
    assert searcher.set_search_properties(spec.search.metric, spec.search.mode, tune_space(spec.search))
    configs = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        assert isinstance(config, dict), config
        configs.append(config)
        searcher.on_trial_complete(f"t{i}", {spec.search.metric: -math.log10(config["lr"]) / 4})
    return configs


def test_every_spec_algorithm_is_registered() -> None:
    assert registered() == sorted(ALGORITHMS)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_suggestions_stay_in_the_space_and_repeat_with_the_seed(minimal_spec: dict, algorithm: str) -> None:
    configs = _suggest(_spec(minimal_spec, algorithm), 12)
    for config in configs:
        assert 1e-4 <= config["lr"] <= 1e-1
        assert config["prefix_length"] in (5, 6)  # the spec's int bounds are inclusive
        assert config["lora_rank"] in (4, 8, 16)
        assert 0.0 <= config["warmup_ratio"] <= 0.2
    assert {c["prefix_length"] for c in configs} == {5, 6}
    assert _suggest(_spec(minimal_spec, algorithm), 12) == configs
    assert _suggest(_spec(minimal_spec, algorithm, seed=1), 12) != configs


def test_tpe_concentrates_where_the_objective_is_high(minimal_spec: dict) -> None:
    """The fake objective rewards small lr; after the random start TPE should favour it."""
    configs = _suggest(_spec(minimal_spec, "tpe"), 12)
    startup = 3  # max(2, min(10, 12 // 4))
    random_part = [math.log10(c["lr"]) for c in configs[:startup]]
    guided = [math.log10(c["lr"]) for c in configs[startup:]]
    assert sum(guided) / len(guided) < -2.5  # the middle of log10 [-4, -1] is -2.5
    assert min(guided) <= min(random_part)
