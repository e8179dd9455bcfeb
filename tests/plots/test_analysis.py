"""The numbers behind the plots, checked by hand and against scipy."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from searchsvc.plots.analysis import correlation_ratio, parallel_axis, ranks, running_best, spearman


def test_running_best_by_mode() -> None:
    values = [None, 0.5, 0.4, None, 0.7, 0.6]
    assert running_best(values, mode="max") == [None, 0.5, 0.5, 0.5, 0.7, 0.7]
    assert running_best(values, mode="min") == [None, 0.5, 0.4, 0.4, 0.4, 0.4]


@pytest.mark.parametrize(("x", "y"), [
    ([1, 2, 3, 4, 5], [2.0, 1.0, 4.0, 3.0, 5.0]),
    ([0.1, 0.1, 0.3, 0.2, 0.5, 0.4], [5.0, 6.0, 1.0, 1.0, 2.0, 9.0]),
    ([4, 8, 4, 8, 16], [0.3, 0.2, 0.35, 0.25, 0.1]),
])
def test_ranks_and_spearman_match_scipy(x: list[float], y: list[float]) -> None:
    assert ranks(y) == list(stats.rankdata(y))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_spearman_of_a_constant_is_zero_and_monotone_is_one() -> None:
    assert spearman([3, 3, 3], [0.1, 0.2, 0.3]) == 0.0
    assert spearman([1e-3, 2e-3, 8e-3], [0.1, 0.2, 0.9]) == pytest.approx(1.0)
    assert spearman([1e-3, 2e-3, 8e-3], [0.9, 0.2, 0.1]) == pytest.approx(-1.0)


def test_correlation_ratio_by_hand() -> None:
    # a category per value level -> 1; separated categories: ranks a:{1,2} b:{3,4}, between 4 of total 5
    assert correlation_ratio(["a", "a", "b", "b"], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(1.0)
    assert correlation_ratio(["a", "a", "b", "b"], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(math.sqrt(0.8))
    # ranks 1,2,3,4 in groups a:{1,4} b:{2,3}: both means 2.5 -> eta 0
    assert correlation_ratio(["a", "b", "b", "a"], [0.1, 0.2, 0.3, 0.4]) == 0.0
    # ranks a:{1,2,3} b:{4}: between = 3*(2-2.5)^2 + 1*(4-2.5)^2 = 3; total = 5 -> sqrt(0.6)
    assert correlation_ratio(["a", "a", "a", "b"], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(0.6))


def test_parallel_axis_log_numeric_and_choice() -> None:
    lr = parallel_axis("lr", [1e-3, 1e-2, None, 1e-1], {"type": "loguniform", "low": 1e-3, "high": 1e-1})
    assert lr.positions == [0.0, pytest.approx(0.5), None, 1.0]
    assert lr.ticks == [(0.0, "0.001"), (1.0, "0.1")]
    rank = parallel_axis("lora_rank", [8, 4, 16], {"type": "choice", "values": [4, 8, 16, 32]})
    assert rank.positions == [pytest.approx(1 / 3), 0.0, pytest.approx(2 / 3)]
    assert [label for _, label in rank.ticks] == ["4", "8", "16", "32"]
    method = parallel_axis("method", ["lora", "peml", "lora"], None)
    assert method.positions == [0.0, 1.0, 0.0]
    same = parallel_axis("x", [2.0, 2.0], {"type": "uniform", "low": 2.0, "high": 2.0})
    assert same.positions == [0.5, 0.5]
