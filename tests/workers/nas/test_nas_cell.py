"""Candidates and the mixed cell: names, the distinct design (own maps, unit-RMS outputs, a
shared gain) and the shared design old artifacts use, relaxed and discrete arithmetic."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch.nn import functional as F

from searchsvc.spec import PemlSpec
from tests.workers.helpers import STRICT_WARNINGS
from workers.nas.candidates import Candidate, candidate_space, candidates_from_spec
from workers.nas.cell import MixedCell, rms_normalize

pytestmark = STRICT_WARNINGS

D = 8
# The design artifacts exported before the distinct cells use: one linear for all candidates.
Shared = functools.partial(MixedCell, design="shared")


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
    # Dropout is searched only with held-out α updates; otherwise the first listed dropout.
    default = candidates_from_spec(PemlSpec())
    assert len(default) == 8 and {c.dropout for c in default} == {0.1}
    assert len(candidates_from_spec(PemlSpec(schedule="bilevel"))) == 24
    assert len(candidates_from_spec(PemlSpec(search_dropout=True))) == 24
    assert len(candidates_from_spec(PemlSpec(schedule="bilevel", search_dropout=False, dropouts=[0.3, 0.1]))) == 8


def test_invalid_candidates_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown activation"):
        Candidate("swish", 0.1, False)
    with pytest.raises(ValueError, match="dropout"):
        Candidate("relu", 1.0, False)
    with pytest.raises(ValueError, match="repeat"):
        candidate_space(dropouts=[0.1, 0.1])
    with pytest.raises(ValueError, match="names repeat"):
        MixedCell(D, [Candidate("relu", 0.1, False), Candidate("relu", 0.1, False)])


def test_shared_cell_parameters_do_not_grow_with_candidates() -> None:
    # One shared Linear(d, d): d·d weights + d biases; one LayerNorm: d + d. For d = 8:
    # 64 + 8 + 16 = 88, whether the cell has 24 candidates or 1.
    full = Shared(D, candidate_space())
    assert sum(p.numel() for p in full.parameters()) == D * D + D + 2 * D == 88
    one = Shared(D, [Candidate("gelu", 0.3, True)])
    assert sum(p.numel() for p in one.parameters()) == 88
    # No LayerNorm candidate: no LayerNorm parameters, d·d + d = 72.
    plain = Shared(D, candidate_space(layernorm=[False]))
    assert sum(p.numel() for p in plain.parameters()) == D * D + D == 72


def test_linear_is_applied_at_most_twice_per_forward() -> None:
    cell = Shared(D, candidate_space())
    calls: list[int] = []
    assert cell.linear is not None
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
    cell = Shared(D, [Candidate("tanh", 0.5, True), Candidate("leaky_relu", 0.5, False)]).eval()
    x = torch.randn(4, D)
    assert cell.norm is not None and cell.linear is not None
    with torch.no_grad():
        normed = F.layer_norm(x, (D,), cell.norm.weight, cell.norm.bias)
        torch.testing.assert_close(cell.candidate_output(x, 0), torch.tanh(normed @ cell.linear.weight.T + cell.linear.bias))
        torch.testing.assert_close(cell.candidate_output(x, 1), F.leaky_relu(x @ cell.linear.weight.T + cell.linear.bias))


def test_relaxed_cell_is_the_hand_weighted_sum() -> None:
    # Two candidates, α = [ln 1, ln 3] -> weights [0.25, 0.75]; eval mode: dropout is identity.
    torch.manual_seed(1)
    cell = Shared(D, [Candidate("relu", 0.1, False), Candidate("tanh", 0.3, False)]).eval()
    x = torch.randn(3, D)
    assert cell.linear is not None
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
    cell = Shared(D, candidate_space()).eval()
    x = torch.randn(3, D)
    index = [c.name for c in cell.candidates].index("gelu-d0.3-ln")
    assert cell.norm is not None and cell.linear is not None
    with torch.no_grad():
        expected = x + F.gelu(cell.linear(cell.norm(x)))
        assert torch.equal(cell.forward_one(x, index), expected)


def test_residual_flag() -> None:
    torch.manual_seed(3)
    cell = Shared(D, [Candidate("relu", 0.1, False)], residual=False).eval()
    x = torch.randn(2, D)
    assert cell.linear is not None
    with torch.no_grad():
        assert torch.equal(cell.forward_one(x, 0), torch.relu(cell.linear(x)))
        torch.testing.assert_close(cell(x, torch.tensor([1.0]), [0]), torch.relu(cell.linear(x)))


def test_dropout_is_drawn_per_candidate_in_training() -> None:
    # Two candidates identical but for dropout: in training their masks differ, so the
    # mix is not simply one dropout of the shared activation.
    torch.manual_seed(4)
    cell = Shared(D, [Candidate("relu", 0.5, False), Candidate("relu", 0.1, False)]).train()
    x = torch.randn(64, D)
    out = cell(x, torch.tensor([0.5, 0.5]), [0, 1]) - x
    assert cell.linear is not None
    h = torch.relu(cell.linear(x)).detach()
    # Each entry is 0.5·h·(m0/0.5) + 0.5·h·(m1/0.9) with masks m0, m1 in {0, 1}.
    ratios = {round(r, 3) for r in (out.detach()[h > 0.1] / h[h > 0.1]).tolist()}
    assert ratios <= {0.0, 1.0, round(0.5 / 0.9, 3), round(1.0 + 0.5 / 0.9, 3)}
    assert len(ratios) >= 3


# ---- the distinct design (the default) -------------------------------------------------


def _set_map(cell: MixedCell, key: str, weight: torch.Tensor, bias: float = 0.0) -> None:
    assert cell.maps is not None
    with torch.no_grad():
        cell.maps[key].weight.copy_(weight)
        cell.maps[key].bias.fill_(bias)


def test_distinct_cell_has_one_map_per_activation_and_layernorm() -> None:
    # 24 candidates, 8 (activation, LN) pairs: 8 · (d² + d) + LayerNorm 2d + gain d. For d = 8:
    # 8 · 72 + 16 + 8 = 600. Dropout variants share their pair's map.
    full = MixedCell(D, candidate_space())
    assert full.maps is not None and sorted(full.maps) == sorted(
        f"{a}{ln}" for a in ("relu", "tanh", "leaky_relu", "gelu") for ln in ("", "-ln"))
    assert sum(p.numel() for p in full.parameters()) == 8 * (D * D + D) + 2 * D + D == 600
    assert sum(p.numel() for p in MixedCell(D, [Candidate("gelu", 0.3, False)]).parameters()) == D * D + D + D == 80


def test_two_candidates_give_different_outputs_at_evaluation() -> None:
    # Same activation, with and without LayerNorm, and two activations: every pair differs,
    # and not by a pointwise function of one shared pre-activation (their maps differ).
    torch.manual_seed(5)
    candidates = [Candidate("relu", 0.1, True), Candidate("relu", 0.1, False), Candidate("tanh", 0.1, False)]
    cell = MixedCell(D, candidates).eval()
    x = torch.randn(6, D)
    with torch.no_grad():
        outs = [cell.candidate_output(x, j) for j in range(3)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not torch.allclose(outs[a], outs[b], atol=1e-3), (a, b)
    assert cell.maps is not None
    assert not torch.equal(cell.maps["relu"].weight, cell.maps["tanh"].weight)


def test_candidate_outputs_are_normalised_to_unit_rms_by_hand() -> None:
    # d = 4, x = [1, -1, 2, 0]; relu's map 3·I, tanh's map I, zero biases.
    #   relu(3x) = [3, 0, 6, 0]: mean square 45/4 = 11.25, so out = [3, 0, 6, 0] / √11.25
    #            = [0.894427, 0, 1.788854, 0], L2 norm √(0.8 + 3.2) = 2 = √d;
    #   tanh(x)  = [0.761594, -0.761594, 0.964028, 0]: raw norm 1.5, normalised norm also 2.
    # Unnormalised, relu's output would be 4.5x louder (6.708 against 1.490) and win on size.
    d = 4
    cell = MixedCell(d, [Candidate("relu", 0.5, False), Candidate("tanh", 0.5, False)]).eval()
    _set_map(cell, "relu", 3 * torch.eye(d))
    _set_map(cell, "tanh", torch.eye(d))
    x = torch.tensor([[1.0, -1.0, 2.0, 0.0]])
    with torch.no_grad():
        relu, tanh = cell.candidate_output(x, 0), cell.candidate_output(x, 1)
        torch.testing.assert_close(relu, torch.tensor([[0.894427, 0.0, 1.788854, 0.0]]), atol=1e-5, rtol=0)
        t = math.tanh(1.0), math.tanh(2.0)
        rms = math.sqrt((2 * t[0] ** 2 + t[1] ** 2) / 4)
        torch.testing.assert_close(tanh, torch.tensor([[t[0], -t[0], t[1], 0.0]]) / rms, atol=1e-5, rtol=0)
        assert relu.norm().item() == pytest.approx(2.0, abs=1e-5)
        assert tanh.norm().item() == pytest.approx(2.0, abs=1e-5)
        # Scaling a map changes nothing for relu (positively homogeneous): size cannot win.
        _set_map(cell, "relu", 30 * torch.eye(d))
        torch.testing.assert_close(cell.candidate_output(x, 0), relu)


def test_distinct_relaxed_and_discrete_cells_by_hand() -> None:
    # weights [0.25, 0.75]; gain g: cell(x) = x + g ⊙ (0.25 · n(relu(W₀x + b₀)) + 0.75 · n(tanh(W₁x + b₁)))
    torch.manual_seed(6)
    cell = MixedCell(D, [Candidate("relu", 0.1, False), Candidate("tanh", 0.3, False)]).eval()
    assert cell.maps is not None and cell.gain is not None
    with torch.no_grad():
        cell.gain.copy_(torch.linspace(0.5, 2.0, D))
    x = torch.randn(3, D)
    with torch.no_grad():
        relu = rms_normalize(torch.relu(cell.maps["relu"](x)))
        tanh = rms_normalize(torch.tanh(cell.maps["tanh"](x)))
        expected = x + cell.gain * (0.25 * relu + 0.75 * tanh)
        torch.testing.assert_close(cell(x, torch.tensor([0.25, 0.75]), [0, 1]), expected)
        torch.testing.assert_close(cell.forward_one(x, 1), x + cell.gain * tanh)


def test_rms_normalize_keeps_a_dead_relu_finite() -> None:
    out = rms_normalize(torch.zeros(2, 4))
    assert torch.equal(out, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="unknown cell design"):
        MixedCell(D, [Candidate("relu", 0.1, False)], design="wide")
