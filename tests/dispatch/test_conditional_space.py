"""``method`` as a search dimension: each trial draws a method, then only the dimensions
that method reads; the searcher's history holds exactly what each trial sampled."""

from __future__ import annotations

import math
import pickle
from collections import Counter
from pathlib import Path

import pytest

from searchsvc.dispatch.searchers import make_searcher
from searchsvc.dispatch.space import ConditionalSpace, param_space, tune_space
from searchsvc.spec import parse_spec

METHODS = ["head", "lora", "prefix", "peml"]
SPACE = {
    "method": {"type": "choice", "values": METHODS},
    "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},                              # every method
    "lora_rank": {"type": "choice", "values": [2, 4, 8]},                                 # lora, peml (inferred)
    "prefix_length": {"type": "int", "low": 2, "high": 20, "when": {"method": ["peml"]}},  # prefix narrowed away
    "nas_cells": {"type": "int", "low": 1, "high": 3},                                    # peml only
}
# What each method's trials must hold, worked out from METHOD_HYPERPARAMETERS and the `when` above.
EXPECTED_KEYS = {
    "head": {"method", "lr"},
    "lora": {"method", "lr", "lora_rank"},
    "prefix": {"method", "lr"},
    "peml": {"method", "lr", "lora_rank", "prefix_length", "nas_cells"},
}


def _spec(minimal_spec: dict, algorithm: str, *, seed: int = 0, num_trials: int = 20):  # type: ignore[no-untyped-def]
    return parse_spec({**minimal_spec, "search": {
        "algorithm": algorithm, "num_trials": num_trials, "max_concurrent": num_trials, "seed": seed, "space": SPACE}})


def _objective(config: dict) -> float:
    """Rewards peml above all, then an lr near 1e-2."""
    return (1.0 if config["method"] == "peml" else 0.0) - abs(math.log10(config["lr"]) + 2) / 10


def _run(searcher, n: int, *, start: int = 0) -> list[dict]:  # type: ignore[no-untyped-def]
    configs = []
    for i in range(start, start + n):
        config = searcher.suggest(f"t{i}")
        assert isinstance(config, dict), config
        configs.append(config)
        searcher.on_trial_complete(f"t{i}", {"objective": _objective(config)})
    return configs


def _searcher(spec):  # type: ignore[no-untyped-def]
    searcher = make_searcher(spec.search)
    # The searcher owns the space: Tune's call with the Tuner's (empty) param_space changes nothing.
    assert param_space(spec.search) == {}
    assert searcher.set_search_properties(spec.search.metric, spec.search.mode, param_space(spec.search)) is False
    return searcher


@pytest.mark.parametrize("algorithm", ["tpe", "random"])
def test_each_trial_samples_only_its_methods_hyperparameters(minimal_spec: dict, algorithm: str) -> None:
    spec = _spec(minimal_spec, algorithm)
    configs = _run(_searcher(spec), 20)
    assert {c["method"] for c in configs} == set(METHODS)
    for config in configs:
        assert set(config) == EXPECTED_KEYS[config["method"]], config
        assert 1e-4 <= config["lr"] <= 1e-1
        if "prefix_length" in config:
            assert 2 <= config["prefix_length"] <= 20 and 1 <= config["nas_cells"] <= 3
    assert _run(_searcher(_spec(minimal_spec, algorithm)), 20) == configs  # the seed repeats it


def test_optunas_history_holds_exactly_what_each_trial_sampled(minimal_spec: dict) -> None:
    """TPE models each parameter from the trials that drew it, and no others."""
    searcher = _searcher(_spec(minimal_spec, "tpe"))
    configs = _run(searcher, 12)
    trials = searcher.searcher._ot_study.get_trials()  # the ConcurrencyLimiter's OptunaSearch
    assert [t.params for t in trials] == configs
    assert [t.value for t in trials] == [_objective(c) for c in configs]


def test_tpe_learns_which_method_wins(minimal_spec: dict) -> None:
    """After its 4 random start-up trials TPE draws the rewarded method far more often than
    the 1 in 4 that random search draws (hand-run: TPE 9 of 16 on seed 0, random 5 of 16)."""
    guided = _run(_searcher(_spec(minimal_spec, "tpe")), 20)[4:]
    random = _run(_searcher(_spec(minimal_spec, "random")), 20)[4:]
    tpe_share = Counter(c["method"] for c in guided)["peml"] / len(guided)
    random_share = Counter(c["method"] for c in random)["peml"] / len(random)
    assert tpe_share >= 0.5 > random_share, (tpe_share, random_share)


def test_the_searcher_survives_tunes_save_and_restore(minimal_spec: dict, tmp_path: Path) -> None:
    """Tune pickles the searcher, define-by-run space included, when it saves the experiment."""
    spec = _spec(minimal_spec, "tpe")
    first = _searcher(spec)
    before = _run(first, 6)
    first.save(str(tmp_path / "searcher.pkl"))
    restored = make_searcher(spec.search)
    restored.restore(str(tmp_path / "searcher.pkl"))
    after = _run(restored, 2, start=6)
    assert all(set(c) == EXPECTED_KEYS[c["method"]] for c in after)
    assert len(restored.searcher._ot_study.get_trials()) == len(before) + 2
    assert pickle.loads(pickle.dumps(ConditionalSpace(spec.search))).methods == METHODS


def test_a_conditional_space_has_no_flat_form(minimal_spec: dict) -> None:
    with pytest.raises(ValueError, match="search.space.method"):
        tune_space(_spec(minimal_spec, "tpe").search)
