"""Dynamic task weights λ = softmax(α·Δ), worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tests.workers.helpers import STRICT_WARNINGS
from workers.coordination import DynamicTaskWeights

pytestmark = STRICT_WARNINGS


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_uniform_until_two_updates() -> None:
    weights = DynamicTaskWeights(2, alpha=1.0, smoothing=0.0)
    assert weights.weights.tolist() == [0.5, 0.5]
    assert weights.update([t(1, 0), t(0, 1)]).tolist() == [0.5, 0.5]
    assert weights.rates is None


def test_two_updates_by_hand() -> None:
    weights = DynamicTaskWeights(2, alpha=1.0, smoothing=0.0)
    weights.update([t(1, 0), t(0, 1)])
    # Task 0: ‖[2,0] - [1,0]‖ / ‖[1,0]‖ = 1; task 1 unchanged: 0 -> Δ = [1, 0]
    # λ = softmax([1, 0]) = [e/(e+1), 1/(e+1)] = [0.731059, 0.268941]
    out = weights.update([t(2, 0), t(0, 1)])
    assert weights.rates is not None
    assert weights.rates.tolist() == pytest.approx([1.0, 0.0])
    assert out.tolist() == pytest.approx([math.e / (math.e + 1), 1 / (math.e + 1)], abs=1e-6)
    assert out.tolist() == pytest.approx([0.731059, 0.268941], abs=1e-6)


def test_rates_are_smoothed() -> None:
    weights = DynamicTaskWeights(2, alpha=2.0, smoothing=0.5)
    weights.update([t(1, 0), t(0, 1)])
    weights.update([t(2, 0), t(0, 1)])  # Δ_now = [1, 0]; the first value seeds the average -> [1, 0]
    # Task 0: ‖[2,0] - [2,0]‖ = 0; task 1: ‖[0,3] - [0,1]‖ / 1 = 2 -> Δ_now = [0, 2]
    # EMA: 0.5·[1, 0] + 0.5·[0, 2] = [0.5, 1]; λ = softmax(2·[0.5, 1]) = softmax([1, 2])
    #    = [1/(1+e), e/(1+e)] = [0.268941, 0.731059]
    out = weights.update([t(2, 0), t(0, 3)])
    assert weights.rates is not None and weights.rates.tolist() == pytest.approx([0.5, 1.0])
    assert out.tolist() == pytest.approx([0.268941, 0.731059], abs=1e-6)


def test_alpha_zero_is_always_uniform() -> None:
    weights = DynamicTaskWeights(3, alpha=0.0)
    for scale in (1.0, 5.0, 0.1):
        out = weights.update([t(scale, 0), t(0, 1), t(1, 1)])
        assert out.tolist() == pytest.approx([1 / 3] * 3)


def test_a_task_with_a_zero_previous_gradient_gives_no_measurement() -> None:
    weights = DynamicTaskWeights(2, alpha=1.0, smoothing=0.0)
    weights.update([t(1, 0), t(0, 0)])
    # Task 1 had no gradient before: no rate (0), rather than 1/eps = 1e8 taking all the weight.
    # Task 0: ‖[1,0] - [1,0]‖ = 0 -> Δ = [0, 0] -> uniform.
    assert weights.update([t(1, 0), t(0, 1)]).tolist() == pytest.approx([0.5, 0.5])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        DynamicTaskWeights(2, alpha=-1.0)
    with pytest.raises(ValueError, match="smoothing"):
        DynamicTaskWeights(2, alpha=1.0, smoothing=1.0)
    with pytest.raises(ValueError, match="expected 2"):
        DynamicTaskWeights(2, alpha=1.0).update([t(1, 0)])


def test_a_restored_state_continues_exactly() -> None:
    """Two updates in, saved and loaded into a fresh instance: the next λ is the same as
    the original's (rates 1.0 vs 0.0 after the first measured step: λ ∝ (e, 1))."""
    steps = [[torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])],
             [torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])],
             [torch.tensor([2.0, 1.0]), torch.tensor([0.0, 3.0])]]
    original = DynamicTaskWeights(2, alpha=1.0, smoothing=0.5)
    for grads in steps[:2]:
        original.update(grads)
    assert original.weights.tolist() == pytest.approx([math.e / (math.e + 1), 1 / (math.e + 1)])
    restored = DynamicTaskWeights(2, alpha=1.0, smoothing=0.5)
    restored.load_state_dict(original.state_dict())
    assert restored.update(steps[2]).tolist() == original.update(steps[2]).tolist()
    with pytest.raises(ValueError, match="2 tasks, not 3"):
        DynamicTaskWeights(3, alpha=1.0).load_state_dict(original.state_dict())


def test_uniform_weights_keep_no_gradient_history() -> None:
    """α = 0 (the measuring-only coordinator every method has): λ stays uniform and no task
    gradient is kept, so neither device memory nor checkpoints carry n_tasks gradients."""
    weights = DynamicTaskWeights(2, alpha=0.0)
    for scale in (1.0, 5.0):
        assert weights.update([torch.tensor([scale, 0.0]), torch.tensor([0.0, 1.0])]).tolist() == [0.5, 0.5]
    assert weights.state_dict()["previous"] is None and weights.rates is None
