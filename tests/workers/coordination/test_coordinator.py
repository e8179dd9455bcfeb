"""GradientCoordinator on tiny models whose task gradients are worked out by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from searchsvc.spec import CoordinationSpec
from tests.workers.helpers import STRICT_WARNINGS
from workers.coordination import EpochAccumulator, GradientCoordinator, StepStats, coordinator_from_spec

pytestmark = STRICT_WARNINGS

X1 = torch.tensor([1.0, 0.0])
X2 = torch.tensor([-1.0, 1.0])


class Toy(nn.Module):
    """Shared vector w = [2, 3]; one scalar head per task; L_i = h_i · (w · x_i).

    ∂L_i/∂w = h_i · x_i, so with h = 1: g1 = [1, 0], g2 = [-1, 1] (g1·g2 = -1: a conflict);
    ∂L_i/∂h_i = w · x_i: 2 for task 1, -2 + 3 = 1 for task 2.
    """

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([2.0, 3.0]))
        self.h1 = nn.Parameter(torch.tensor(1.0))
        self.h2 = nn.Parameter(torch.tensor(1.0))

    def losses(self) -> list[torch.Tensor]:
        return [self.h1 * (self.w @ X1), self.h2 * (self.w @ X2)]


class TwoHeads(nn.Module):
    """A small linear encoder shared by two regression heads pulled towards opposite targets."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(4, 3)
        self.only_task_0 = nn.Parameter(1.0 + 0.1 * torch.randn(3))  # shared, but task 1 never uses it
        self.heads = nn.ModuleList([nn.Linear(3, 1), nn.Linear(3, 1)])
        # Like heads and targets +1 / -1: the two tasks pull the encoder in opposite directions.
        self.heads[1].load_state_dict(self.heads[0].state_dict())
        self.x = torch.randn(8, 4)

    def losses(self) -> list[torch.Tensor]:
        z = self.encoder(self.x)
        out0 = self.heads[0](z * self.only_task_0).squeeze(-1)
        out1 = self.heads[1](z).squeeze(-1)
        return [((out0 - 1.0) ** 2).mean(), ((out1 + 1.0) ** 2).mean()]

    def shared(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), self.only_task_0]


def grads_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_no_projection_and_alpha_zero_equals_the_mean_loss_gradient() -> None:
    model = TwoHeads()
    reference = copy.deepcopy(model)
    torch.stack(reference.losses()).mean().backward()
    coordinator = GradientCoordinator(model.shared(), 2, grad_alpha=0.0, project=False)
    stats = coordinator.backward(model.losses())
    assert stats.coordinated
    got, want = grads_of(model), grads_of(reference)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-6), name


def test_toy_without_projection_by_hand() -> None:
    # λ = [0.5, 0.5]: w.grad = 0.5·([1, 0] + [-1, 1]) = [0, 0.5].
    model = Toy()
    stats = GradientCoordinator([model.w], 2, grad_alpha=0.0, project=False).backward(model.losses())
    assert model.w.grad is not None and model.w.grad.tolist() == [0.0, 0.5]
    # No projection: the score after is the score before, -cos(g1, g2) = 1/√2.
    assert stats.conflict_before == pytest.approx(1 / math.sqrt(2))
    assert stats.conflict_after == stats.conflict_before
    assert stats.conflict_fraction == 1.0


def test_projection_removes_the_conflict() -> None:
    # g1' = [0.5, 0.5], g2' = [0, 1] (see test_conflict) -> w.grad = 0.5·[0.5, 1.5] = [0.25, 0.75].
    # Dot with the raw gradients: [0.25, 0.75]·[1, 0] = 0.25 >= 0; ·[-1, 1] = 0.5 >= 0.
    model = Toy()
    stats = GradientCoordinator([model.w], 2, grad_alpha=0.0).backward(model.losses())
    assert model.w.grad is not None and model.w.grad.tolist() == [0.25, 0.75]
    assert float(model.w.grad @ X1) >= 0 and float(model.w.grad @ X2) >= 0
    # After: -cos([0.5, 0.5], [0, 1]) = -1/√2 < before = 1/√2.
    assert stats.conflict_after == pytest.approx(-1 / math.sqrt(2))


def test_projection_removes_the_conflict_on_a_linear_model() -> None:
    model = TwoHeads()
    shared = model.shared()
    raw = [
        torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(shared, gs, strict=True)])
        for gs in (torch.autograd.grad(loss, shared, allow_unused=True, retain_graph=True) for loss in model.losses())
    ]
    assert float(raw[0] @ raw[1]) < 0  # the opposite targets do conflict
    GradientCoordinator(shared, 2, grad_alpha=0.0).backward(model.losses())
    written = torch.cat([p.grad.reshape(-1) for p in shared if p.grad is not None])
    assert float(written @ raw[0]) >= 0 and float(written @ raw[1]) >= 0


def test_heads_get_their_own_task_gradient() -> None:
    # h_i.grad = λ_i · ∂L_i/∂h_i = 0.5 · 2 = 1.0 and 0.5 · 1 = 0.5; projection does not touch heads.
    model = Toy()
    GradientCoordinator([model.w], 2, grad_alpha=0.0).backward(model.losses())
    assert model.h1.grad is not None and model.h1.grad.item() == 1.0
    assert model.h2.grad is not None and model.h2.grad.item() == 0.5


def test_weights_follow_the_rate_of_gradient_change() -> None:
    model = Toy()
    coordinator = GradientCoordinator([model.w], 2, grad_alpha=1.0, project=False, smoothing=0.0)
    coordinator.backward(model.losses())
    model.zero_grad()
    with torch.no_grad():
        model.h1.fill_(2.0)  # g1: [1, 0] -> [2, 0], Δ1 = 1; g2 unchanged, Δ2 = 0
    stats = coordinator.backward(model.losses())
    a, b = math.e / (math.e + 1), 1 / (math.e + 1)  # softmax([1, 0])
    assert stats.weights == pytest.approx([a, b], abs=1e-6)
    # w.grad = a·[2, 0] + b·[-1, 1]; h1.grad = a·2, h2.grad = b·1.
    assert model.w.grad is not None
    assert torch.allclose(model.w.grad, torch.tensor([2 * a - b, b]), atol=1e-6)
    assert model.h1.grad is not None and model.h1.grad.item() == pytest.approx(2 * a, abs=1e-6)
    assert model.h2.grad is not None and model.h2.grad.item() == pytest.approx(b, abs=1e-6)


def test_every_k_coordinates_steps_one_and_four_only() -> None:
    model = Toy()
    coordinator = GradientCoordinator([model.w], 2, grad_alpha=0.0, every_k=3)
    flags = []
    for _ in range(6):
        model.zero_grad()
        stats = coordinator.backward(model.losses())
        flags.append(stats.coordinated)
        if not stats.coordinated:
            # The cheap path: plain gradient of the λ-weighted sum, no projection -> [0, 0.5].
            assert stats.conflict_before is None
            assert model.w.grad is not None and model.w.grad.tolist() == [0.0, 0.5]
    assert flags == [True, False, False, True, False, False]


def test_extra_term_and_existing_grads_are_added() -> None:
    model = Toy()
    model.w.grad = torch.tensor([1.0, 1.0])
    model.h1.grad = torch.tensor(1.0)
    # extra = ½‖w‖² + h1² -> ∂/∂w = w = [2, 3], ∂/∂h1 = 2·h1 = 2.
    extra = 0.5 * (model.w @ model.w) + model.h1**2
    GradientCoordinator([model.w], 2, grad_alpha=0.0).backward(model.losses(), extra=extra)
    # w: existing [1, 1] + projected [0.25, 0.75] + extra [2, 3] = [3.25, 4.75]
    assert model.w.grad is not None and model.w.grad.tolist() == [3.25, 4.75]
    # h1: existing 1 + task 1.0 + extra 2 = 4; h2: task 0.5 only.
    assert model.h1.grad is not None and model.h1.grad.item() == 4.0
    assert model.h2.grad is not None and model.h2.grad.item() == 0.5


def test_extra_is_added_on_the_cheap_path_too() -> None:
    model = Toy()
    coordinator = GradientCoordinator([model.w], 2, grad_alpha=0.0, every_k=2)
    coordinator.backward(model.losses())
    model.zero_grad()
    stats = coordinator.backward(model.losses(), extra=0.5 * (model.w @ model.w))
    # Plain mean gradient [0, 0.5] + w = [2, 3] -> [2, 3.5].
    assert not stats.coordinated
    assert model.w.grad is not None and model.w.grad.tolist() == [2.0, 3.5]


def test_bad_calls_are_refused() -> None:
    model = Toy()
    with pytest.raises(ValueError, match="at least one shared"):
        GradientCoordinator([], 2, grad_alpha=0.0)
    with pytest.raises(ValueError, match="every_k"):
        GradientCoordinator([model.w], 2, grad_alpha=0.0, every_k=0)
    with pytest.raises(ValueError, match="expected 2 task losses"):
        GradientCoordinator([model.w], 2, grad_alpha=0.0).backward(model.losses()[:1])


def test_from_spec() -> None:
    model = Toy()
    assert coordinator_from_spec(CoordinationSpec(), [model.w], 2, grad_alpha=1.0) is None
    built = coordinator_from_spec(CoordinationSpec(enabled=True, project=False, every_k=4), [model.w], 2, grad_alpha=1.0)
    assert built is not None and built.every_k == 4 and not built.project


def test_epoch_accumulator_means() -> None:
    acc = EpochAccumulator(["keyword", "pairs"])
    acc.add(StepStats(coordinated=True, conflict_before=0.6, conflict_after=-0.2, conflict_fraction=1.0, weights=[0.5, 0.5]))
    acc.add(StepStats.plain([0.7, 0.3]))
    acc.add(StepStats(coordinated=True, conflict_before=0.2, conflict_after=0.0, conflict_fraction=0.0, weights=[0.3, 0.7]))
    # Conflict over the 2 coordinated steps: (0.6 + 0.2)/2 = 0.4, (-0.2 + 0)/2 = -0.1, (1 + 0)/2 = 0.5;
    # weights over all 3 steps: (0.5 + 0.7 + 0.3)/3 = 0.5 each.
    assert acc.result() == pytest.approx(
        {
            "grad_conflict": 0.4,
            "grad_conflict_after": -0.1,
            "grad_conflict_fraction": 0.5,
            "task_weight/keyword": 0.5,
            "task_weight/pairs": 0.5,
        }
    )
    acc.reset()
    acc.add(StepStats.plain([0.5, 0.5]))
    assert "grad_conflict" not in acc.result()
    with pytest.raises(ValueError, match="conflict"):
        StepStats(coordinated=True, conflict_before=None, conflict_after=None, conflict_fraction=None, weights=[1.0])
