"""Each registered search algorithm proposes configs inside the spec's space, reproducibly."""

from __future__ import annotations

import math

import pytest

from searchsvc.dispatch.searchers import _startup_trials, make_searcher, registered
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
    startup = 3  # ceil(0.2 * 12)
    random_part = [math.log10(c["lr"]) for c in configs[:startup]]
    guided = [math.log10(c["lr"]) for c in configs[startup:]]
    assert sum(guided) / len(guided) < -2.5  # the middle of log10 [-4, -1] is -2.5
    assert min(guided) <= min(random_part)


@pytest.mark.parametrize(("num_trials", "startup"), [
    (1, 1),     # never more than the budget
    (3, 2),     # the floor: TPE needs a good and a bad trial to split
    (8, 2),     # ceil(1.6)
    (12, 3),    # ceil(2.4): 9 of 12 trials guided
    (20, 4),
    (100, 20),  # a fifth of the budget, no cap: a large study explores before it commits
])
def test_startup_trials_are_a_fifth_of_the_budget(minimal_spec: dict, num_trials: int, startup: int) -> None:
    spec = parse_spec({**minimal_spec, "search": {"num_trials": num_trials, "space": {"lr": {"type": "uniform", "low": 0.1, "high": 0.2}}}})
    assert _startup_trials(spec.search) == startup


def test_a_method_choice_raises_the_floor_to_one_startup_trial_per_method(minimal_spec: dict) -> None:
    methods = ["head", "lora", "prefix", "peml"]
    spec = parse_spec({**minimal_spec, "search": {"num_trials": 8, "space": {"method": {"type": "choice", "values": methods}}}})
    assert _startup_trials(spec.search) == 4  # ceil(0.2 * 8) = 2 would leave two methods unseen at best


@pytest.mark.parametrize("algorithm", ["tpe", "hyperopt"])
def test_the_searcher_is_given_the_startup_count(minimal_spec: dict, algorithm: str) -> None:
    searcher = make_searcher(_spec(minimal_spec, algorithm).search).searcher  # inside the ConcurrencyLimiter
    if algorithm == "tpe":
        assert searcher._sampler._n_startup_trials == 3
    else:
        assert searcher.algo.keywords["n_startup_jobs"] == 3
