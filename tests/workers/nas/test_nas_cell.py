"""Candidates and the mixed cell: names, weight sharing, relaxed and discrete arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from searchsvc.spec import PemlSpec
from tests.workers.helpers import STRICT_WARNINGS
from workers.nas.candidates import Candidate, candidate_space, candidates_from_spec
from workers.nas.cell import MixedCell

pytestmark = STRICT_WARNINGS

D = 8


def test_default_space_is_the_full_product_with_readable_names() -> None:
    space = candidate_space()
    assert len(space) == 4 * 3 * 2 == 24
    names = [c.name for c in space]
    assert len(set(names)) == 24
    assert names[0] == "relu-d0.1-ln" and names[1] == "relu-d0.1"
    assert "gelu-d0.3-ln" in names and "leaky_relu-d0.5" in names


def test_space_from_spec_lists() -> None:
    spec = PemlSpec(activations=["tanh", "gelu"], dropouts=[0.3], layernorm=[False])
    assert [c.name for c in candidates_from_spec(spec)] == ["tanh-d0.3", "gelu-d0.3"]
    assert len(candidates_from_spec(PemlSpec())) == 24


def test_invalid_candidates_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown activation"):
        Candidate("swish", 0.1, False)
    with pytest.raises(ValueError, match="dropout"):
        Candidate("relu", 1.0, False)
    with pytest.raises(ValueError, match="repeat"):
        candidate_space(dropouts=[0.1, 0.1])
    with pytest.raises(ValueError, match="names repeat"):
        MixedCell(D, [Candidate("relu", 0.1, False), Candidate("relu", 0.1, False)])


def test_cell_parameters_do_not_grow_with_candidates() -> None:
    # One shared Linear(d, d): d·d weights + d biases; one LayerNorm: d + d. For d = 8:
    # 64 + 8 + 16 = 88, whether the cell has 24 candidates or 1.
    full = MixedCell(D, candidate_space())
    assert sum(p.numel() for p in full.parameters()) == D * D + D + 2 * D == 88
    one = MixedCell(D, [Candidate("gelu", 0.3, True)])
    assert sum(p.numel() for p in one.parameters()) == 88
    # No LayerNorm candidate: no LayerNorm parameters, d·d + d = 72.
    plain = MixedCell(D, candidate_space(layernorm=[False]))
    assert sum(p.numel() for p in plain.parameters()) == D * D + D == 72


def test_linear_is_applied_at_most_twice_per_forward() -> None:
    cell = MixedCell(D, candidate_space())
    calls: list[int] = []
    cell.linear.register_forward_hook(lambda *_: calls.append(1))
    weights = torch.full((24,), 1 / 24)
    cell(torch.randn(5, D), weights, list(range(24)))
    assert len(calls) == 2
    calls.clear()
    # Only non-LN candidates active (odd positions): one linear call, no LayerNorm.
    cell(torch.randn(5, D), weights, list(range(1, 24, 2)))
    assert len(calls) == 1


def test_candidate_output_is_dropout_act_linear_ln() -> None:
    torch.manual_seed(0)
    cell = MixedCell(D, [Candidate("tanh", 0.5, True), Candidate("leaky_relu", 0.5, False)]).eval()
    x = torch.randn(4, D)
    assert cell.norm is not None
    with torch.no_grad():
        normed = F.layer_norm(x, (D,), cell.norm.weight, cell.norm.bias)
        torch.testing.assert_close(cell.candidate_output(x, 0), torch.tanh(normed @ cell.linear.weight.T + cell.linear.bias))
        torch.testing.assert_close(cell.candidate_output(x, 1), F.leaky_relu(x @ cell.linear.weight.T + cell.linear.bias))


def test_relaxed_cell_is_the_hand_weighted_sum() -> None:
    # Two candidates, α = [ln 1, ln 3] -> weights [0.25, 0.75]; eval mode: dropout is identity.
    torch.manual_seed(1)
    cell = MixedCell(D, [Candidate("relu", 0.1, False), Candidate("tanh", 0.3, False)]).eval()
    x = torch.randn(3, D)
    weights = torch.softmax(torch.tensor([math.log(1.0), math.log(3.0)]), dim=0)
    torch.testing.assert_close(weights, torch.tensor([0.25, 0.75]))
    with torch.no_grad():
        h = x @ cell.linear.weight.T + cell.linear.bias
        expected = x + 0.25 * torch.relu(h) + 0.75 * torch.tanh(h)
        torch.testing.assert_close(cell(x, weights, [0, 1]), expected)
        # Candidate 0 pruned: only candidate 1 is mixed (with whatever weight it is given).
        torch.testing.assert_close(cell(x, torch.tensor([0.0, 1.0]), [1]), x + torch.tanh(h))


def test_discrete_cell_is_exactly_x_plus_the_chosen_op() -> None:
    torch.manual_seed(2)
    cell = MixedCell(D, candidate_space()).eval()
    x = torch.randn(3, D)
    index = [c.name for c in cell.candidates].index("gelu-d0.3-ln")
    assert cell.norm is not None
    with torch.no_grad():
        expected = x + F.gelu(cell.linear(cell.norm(x)))
        assert torch.equal(cell.forward_one(x, index), expected)


def test_residual_flag() -> None:
    torch.manual_seed(3)
    cell = MixedCell(D, [Candidate("relu", 0.1, False)], residual=False).eval()
    x = torch.randn(2, D)
    with torch.no_grad():
        assert torch.equal(cell.forward_one(x, 0), torch.relu(cell.linear(x)))
        torch.testing.assert_close(cell(x, torch.tensor([1.0]), [0]), torch.relu(cell.linear(x)))


def test_dropout_is_drawn_per_candidate_in_training() -> None:
    # Two candidates identical but for dropout: in training their masks differ, so the
    # mix is not simply one dropout of the shared activation.
    torch.manual_seed(4)
    cell = MixedCell(D, [Candidate("relu", 0.5, False), Candidate("relu", 0.1, False)]).train()
    x = torch.randn(64, D)
    out = cell(x, torch.tensor([0.5, 0.5]), [0, 1]) - x
    h = torch.relu(cell.linear(x)).detach()
    # Each entry is 0.5·h·(m0/0.5) + 0.5·h·(m1/0.9) with masks m0, m1 in {0, 1}.
    ratios = {round(r, 3) for r in (out.detach()[h > 0.1] / h[h > 0.1]).tolist()}
    assert ratios <= {0.0, 1.0, round(0.5 / 0.9, 3), round(1.0 + 0.5 / 0.9, 3)}
    assert len(ratios) >= 3
