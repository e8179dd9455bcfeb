"""Sampling weights and per-step shares, checked against shares computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tests.workers.helpers import STRICT_WARNINGS
from workers.sampling import MultiTaskSampler, batch_shares, sampling_weights

pytestmark = STRICT_WARNINGS


def test_proportional_shares() -> None:
    # n = 300, 100 -> γ = 0.75, 0.25 -> 16 rows: 12 + 4 exactly.
    gammas = sampling_weights("proportional", [300, 100])
    assert gammas == pytest.approx([0.75, 0.25])
    assert batch_shares(gammas, 16) == [12, 4]
    # Weights 1 and 2: w·n = 300, 200 -> γ = 0.6, 0.4 -> quotas 9.6, 6.4 -> floors 9, 6;
    # the one row left goes to the larger fraction (0.6, task 0) -> 10, 6.
    gammas = sampling_weights("proportional", [300, 100], weights=[1.0, 2.0])
    assert gammas == pytest.approx([0.6, 0.4])
    assert batch_shares(gammas, 16) == [10, 6]


def test_temperature_shares() -> None:
    # T = 2: (400)^(1/2) = 20, (100)^(1/2) = 10 -> γ = 2/3, 1/3 -> quotas 10.67, 5.33 -> 11, 5.
    gammas = sampling_weights("temperature", [400, 100], temperature=2.0)
    assert gammas == pytest.approx([2 / 3, 1 / 3])
    assert batch_shares(gammas, 16) == [11, 5]
    # T = 1 is proportional; a huge T tends to equal shares.
    assert sampling_weights("temperature", [400, 100], temperature=1.0) == pytest.approx([0.8, 0.2])
    assert sampling_weights("temperature", [400, 100], temperature=1e6) == pytest.approx([0.5, 0.5], abs=1e-5)


def test_round_robin_shares() -> None:
    # Equal shares whatever the sizes and weights: 16 / 3 = 5.33 -> 5, 5, 5; the spare row
    # goes to the first task on a tie -> 6, 5, 5.
    gammas = sampling_weights("round_robin", [1000, 10, 50], weights=[3.0, 1.0, 1.0])
    assert gammas == pytest.approx([1 / 3] * 3)
    assert batch_shares(gammas, 16) == [6, 5, 5]


def test_every_task_gets_at_least_one_row() -> None:
    # n = 1000, 1: quotas 7.992, 0.008 -> floors 7, 0 -> the small task is lifted to 1 -> 7, 1.
    assert batch_shares(sampling_weights("proportional", [1000, 1]), 8) == [7, 1]
    # Three tasks, m = 4: floors 3, 0, 0 -> lifted to 3, 1, 1 (5 rows) -> the big task gives one back.
    assert batch_shares(sampling_weights("proportional", [1000, 1, 1]), 4) == [2, 1, 1]
    with pytest.raises(ValueError, match="smaller than the number of tasks"):
        batch_shares([0.5, 0.25, 0.25], 2)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown sampling strategy"):
        sampling_weights("uniform", [1, 2])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sampling_weights("temperature", [1, 2], temperature=0.0)
    with pytest.raises(ValueError, match="at least one training row"):
        sampling_weights("proportional", [0, 2])


def test_every_step_has_exactly_m_rows_and_streams_cover_each_task() -> None:
    sizes = [300, 10, 90]
    sampler = MultiTaskSampler(sizes, batch_size=16, gammas=sampling_weights("proportional", sizes), seed=0)
    assert sampler.steps_per_epoch == 25  # ceil(400 / 16)
    steps = list(sampler.epoch())
    assert len(steps) == 25
    for rows in steps:
        assert [len(r) for r in rows] == sampler.shares
        assert sum(len(r) for r in rows) == 16
        assert all(0 <= int(i) < n for r, n in zip(rows, sizes, strict=True) for i in r)
    # Quotas 12, 0.4, 3.6 -> floors 12, 0, 3 -> the small task is lifted to 1 -> 12, 1, 3.
    assert sampler.shares == [12, 1, 3]
    # The small task sees every one of its rows before repeating any.
    small = np.concatenate([rows[1] for rows in steps])
    first_pass = small[:10]
    assert sorted(first_pass.tolist()) == list(range(10))


def test_sampler_is_deterministic_given_the_seed() -> None:
    sizes = [50, 20]
    gammas = sampling_weights("round_robin", sizes)

    def draw(seed: int) -> list[list[int]]:
        sampler = MultiTaskSampler(sizes, batch_size=8, gammas=gammas, seed=seed)
        return [np.concatenate(rows).tolist() for _ in range(2) for rows in sampler.epoch()]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
