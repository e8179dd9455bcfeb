"""SearchedPrefix: the PrefixGenerator contract, parameter groups, entropy, pruning, discretization."""

from __future__ import annotations

import json
import math

import pytest
import torch

from searchsvc.spec import PemlSpec
from tests.workers.helpers import STRICT_WARNINGS
from workers.nas.candidates import Candidate
from workers.nas.generator import SearchedPrefix
from workers.prefix import AttentionSlot, PrefixGenerator, generator_from_spec, generator_spec

pytestmark = STRICT_WARNINGS

SLOTS = [AttentionSlot(kv_heads=2, head_dim=4), AttentionSlot(kv_heads=1, head_dim=4)]


def _small(**kwargs: object) -> SearchedPrefix:
    torch.manual_seed(0)
    options: dict[str, object] = {"length": 3, "hidden_size": 16, "slots": SLOTS, "width": 8, "cells": 3}
    options.update(kwargs)
    return SearchedPrefix(**options)  # type: ignore[arg-type]


def _set_alpha(prefix: SearchedPrefix, cell: int, logits: list[float]) -> None:
    with torch.no_grad():
        prefix.alpha[cell] = torch.tensor(logits)


def test_forward_keeps_the_prefix_generator_contract() -> None:
    prefix = _small()
    assert isinstance(prefix, PrefixGenerator)
    assert prefix.vectors.shape == (3, 8) and prefix.width == 8 and prefix.hidden_size == 16
    kv = prefix()
    assert len(kv) == 2
    assert kv[0][0].shape == kv[0][1].shape == (2, 3, 4)
    assert kv[1][0].shape == (1, 3, 4)


def test_defaults_width_cells_and_candidates() -> None:
    prefix = SearchedPrefix(length=2, hidden_size=384, slots=SLOTS)
    # 4 activations x (LayerNorm or not), one fixed dropout: 8 candidates, each its own map.
    assert prefix.width == 128 and len(prefix.cells) == 6 and prefix.alpha.shape == (6, 8)
    assert prefix.design == "distinct" and prefix.output_gain is not None and prefix.relaxation == "softmax"
    assert SearchedPrefix(length=2, hidden_size=32, slots=SLOTS).width == 32
    # α starts at zero plus tiny noise: near-uniform weights, entropy near 6 · ln 8.
    assert prefix.alpha.abs().max() < 0.01
    assert prefix.entropy().item() == pytest.approx(6 * math.log(8), abs=1e-4)


def test_from_spec() -> None:
    spec = PemlSpec(cells=4, width=16, activations=["relu", "gelu"], dropouts=[0.1], layernorm=[True, False])
    prefix = SearchedPrefix.from_spec(spec, length=5, hidden_size=64, slots=SLOTS)
    assert prefix.width == 16 and len(prefix.cells) == 4
    assert [c.name for c in prefix.candidates] == ["relu-d0.1-ln", "relu-d0.1", "gelu-d0.1-ln", "gelu-d0.1"]
    assert len(SearchedPrefix.from_spec(spec, length=5, hidden_size=64, slots=SLOTS, cells=2).cells) == 2


def test_arch_and_weight_parameters_partition_the_parameters() -> None:
    prefix = _small()
    arch = {id(p) for p in prefix.arch_parameters()}
    weights = {id(p) for p in prefix.weight_parameters()}
    assert arch == {id(prefix.alpha)}
    assert not arch & weights
    assert arch | weights == {id(p) for p in prefix.parameters()}
    assert len(prefix.weight_parameters()) == len(list(prefix.parameters())) - 1


def test_minilm_geometry_is_within_the_papers_two_to_eight_percent() -> None:
    # hidden 384, 6 layers x 12 heads x 32 dims, prefix length 10, d = 128, 6 cells, 8 candidates
    # (4 activations x LayerNorm or not), each (activation, LN) its own map:
    #   vectors           10 · 128                                  =     1,280
    #   cells         6 · (8 · (128² + 128) + 2 · 128 + 128 gain)   =   794,880
    #   α                 6 · 8                                     =        48
    #   output        128 · 4,608 + 4,608  (2 · 6 · 384)            =   594,432
    #   output gain       128                                       =       128
    #   total                                                       = 1,390,768  (6.13% of 22.7M)
    slots = [AttentionSlot(kv_heads=12, head_dim=32)] * 6
    prefix = SearchedPrefix(length=10, hidden_size=384, slots=slots, width=128, cells=6)
    count = prefix.parameter_count()
    assert count == 1_390_768, f"MiniLM-geometry PrefixNAS generator: {count:,} parameters"
    assert 0.02 < count / 22_700_000 < 0.08
    assert prefix.check_budget(22_700_000, fraction=0.10) == count
    with pytest.raises(ValueError, match=r"1,390,768 parameters, 6\.13% .* budget is 1% \(227,000\)"):
        prefix.check_budget(22_700_000, fraction=0.01)


def test_gradients_reach_alpha_and_every_weight_from_the_kv_output() -> None:
    prefix = _small().train()
    loss = sum((k.square().sum() + v.sum()) for k, v in prefix())
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    for name, p in prefix.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_minimising_entropy_lowers_every_cell_entropy() -> None:
    prefix = _small(cells=4)
    before = prefix.cell_entropies().detach().clone()
    optimizer = torch.optim.SGD(prefix.arch_parameters(), lr=1.0)
    for _ in range(5):
        optimizer.zero_grad()
        (100.0 * prefix.entropy()).backward()  # a large λ, and nothing else in the loss
        optimizer.step()
    after = prefix.cell_entropies().detach()
    assert (after < before).all(), f"entropies {before.tolist()} -> {after.tolist()}"
    assert all(p.grad is None for p in prefix.weight_parameters())


def test_entropy_and_weights_follow_alpha() -> None:
    # One cell, two candidates, α = [ln 1, ln 3]: weights 0.25 / 0.75, H = 0.562335...
    prefix = _small(cells=1, candidates=[Candidate("relu", 0.1, False), Candidate("tanh", 0.3, False)])
    _set_alpha(prefix, 0, [0.0, math.log(3.0)])
    assert prefix.cell_weights() == [pytest.approx({"relu-d0.1": 0.25, "tanh-d0.3": 0.75})]
    assert prefix.entropy().item() == pytest.approx(0.5623351446188083, abs=1e-6)


def test_relaxed_and_discrete_transforms_by_hand() -> None:
    prefix = _small(cells=1, candidates=[Candidate("relu", 0.1, False), Candidate("tanh", 0.3, False)], output_scale=1.0,
                    design="shared", learn_gain=False).eval()
    _set_alpha(prefix, 0, [0.0, math.log(3.0)])
    cell = prefix.mixed_cells[0]
    assert cell.linear is not None
    with torch.no_grad():
        x = prefix.vectors
        h = x @ cell.linear.weight.T + cell.linear.bias
        torch.testing.assert_close(prefix.transform(x), x + 0.25 * torch.relu(h) + 0.75 * torch.tanh(h))
        with prefix.discretized():
            assert prefix.is_discrete
            assert torch.equal(prefix.transform(x), x + torch.tanh(cell.linear(x)))
        assert not prefix.is_discrete
        torch.testing.assert_close(prefix.transform(x), x + 0.25 * torch.relu(h) + 0.75 * torch.tanh(h))


def test_discretized_view_is_reversible_and_changes_nothing() -> None:
    prefix = _small().eval()
    with torch.no_grad():
        relaxed = [k.clone() for k, _ in prefix()]
        state = {k: v.clone() for k, v in prefix.state_dict().items()}
        with prefix.discretized():
            discrete = [k.clone() for k, _ in prefix()]
        again = [k for k, _ in prefix()]
    assert not torch.allclose(relaxed[0], discrete[0])
    for a, b in zip(relaxed, again, strict=True):
        assert torch.equal(a, b)
    for name, value in prefix.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_permanent_discretize_keeps_the_argmax_and_freezes_alpha() -> None:
    prefix = _small().eval()
    _set_alpha(prefix, 1, [0.0] * 5 + [2.0] + [0.0] * 2)
    with torch.no_grad(), prefix.discretized():
        looked = [k.clone() for k, _ in prefix()]
    chosen = prefix.discretize()
    assert chosen[1] == prefix.candidates[5].name
    assert prefix.active.sum(dim=1).tolist() == [1, 1, 1]
    assert not prefix.alpha.requires_grad
    assert prefix.entropy().item() == 0.0
    assert prefix.cell_weights()[1] == {prefix.candidates[5].name: 1.0}
    assert prefix.prune_step(0.9, 1) == [[], [], []]
    with torch.no_grad():
        for a, (b, _) in zip(looked, prefix(), strict=True):
            assert torch.equal(a, b)
    # The discrete model survives a state_dict round trip into a fresh (relaxed) one.
    fresh = _small(alpha_init_std=0.5).eval()
    fresh.load_state_dict(prefix.state_dict())
    assert fresh.is_discrete and not fresh.alpha.requires_grad
    with torch.no_grad():
        for a, (b, _) in zip(looked, fresh(), strict=True):
            assert torch.equal(a, b)


def test_prune_step_follows_the_rule_and_survives_state_dict() -> None:
    # One cell, three candidates with weights [0.7, 0.2, 0.1] (α = ln of them);
    # fraction 0.5, patience 2: threshold 0.5 / 3 = 0.1667, so candidate 2 goes on the 2nd call.
    names = ["relu-d0.1", "tanh-d0.1", "gelu-d0.1"]
    candidates = [Candidate(a, 0.1, False) for a in ("relu", "tanh", "gelu")]
    prefix = _small(cells=1, candidates=candidates)
    _set_alpha(prefix, 0, [math.log(0.7), math.log(0.2), math.log(0.1)])
    assert prefix.prune_step(0.5, 2) == [[]]
    assert prefix.below_streak.tolist() == [[0, 0, 1]]

    # A checkpoint between the two calls resumes the streak.
    resumed = _small(cells=1, candidates=candidates)
    resumed.load_state_dict(prefix.state_dict())
    for model in (prefix, resumed):
        assert model.prune_step(0.5, 2) == [[names[2]]]
        assert model.active.tolist() == [[True, True, False]]
        # Renormalised: 0.7 / 0.9 = 0.7778, 0.2 / 0.9 = 0.2222; softmax stays well-defined.
        assert model.cell_weights() == [pytest.approx({names[0]: 0.7 / 0.9, names[1]: 0.2 / 0.9})]
        assert model.architecture()[0]["pruned"] == [names[2]]

    # Now threshold 0.5 / 2 = 0.25 > 0.2222: candidate 1 goes after two more calls; 0 never.
    assert prefix.prune_step(0.5, 2) == [[]]
    assert prefix.prune_step(0.5, 2) == [[names[1]]]
    for _ in range(3):
        assert prefix.prune_step(0.99, 1) == [[]]
    assert prefix.active.tolist() == [[True, False, False]]

    copy = _small(cells=1, candidates=candidates)
    copy.load_state_dict(prefix.state_dict())
    assert copy.active.tolist() == [[True, False, False]]
    assert copy.cell_weights() == [{names[0]: 1.0}]


def test_pruned_candidates_are_not_computed() -> None:
    prefix = _small(cells=1, candidates=[Candidate("relu", 0.1, True), Candidate("tanh", 0.1, False)])
    _set_alpha(prefix, 0, [5.0, -5.0])
    prefix.prune_step(0.5, 1)
    assert prefix.active.tolist() == [[True, False]]
    calls: list[str] = []
    maps = prefix.mixed_cells[0].maps
    assert maps is not None
    for key, module in maps.items():
        module.register_forward_hook(lambda *_, key=key: calls.append(key))
    prefix()
    assert calls == ["relu-ln"]  # only the surviving candidate's map


def test_architecture_is_json_ready() -> None:
    prefix = _small()
    report = json.loads(json.dumps(prefix.architecture()))
    assert len(report) == 3
    for cell in report:
        assert set(cell) == {"weights", "entropy", "pruned", "chosen"}
        assert len(cell["weights"]) == 8 and cell["pruned"] == []
        assert sum(cell["weights"].values()) == pytest.approx(1.0)
        assert cell["entropy"] == pytest.approx(math.log(8), abs=1e-4)
        assert cell["chosen"] == max(cell["weights"], key=cell["weights"].get)


def test_invalid_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="cell"):
        _small(cells=0)
    with pytest.raises(ValueError, match="width"):
        _small(width=0)
    with pytest.raises(ValueError, match="length"):
        _small(length=0)
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="output_scale"):
            _small(output_scale=bad)


def test_the_cells_output_is_scaled_before_the_output_layer() -> None:
    """Same RNG draws, scale 1 vs 0.1: the transform is exactly a tenth (relaxed and
    discrete), the keys/values are ``W(0.1·x) + b``, and the rebuilt twin keeps the scale."""
    full, gentle = _small(output_scale=1.0).eval(), _small(output_scale=0.1).eval()
    with torch.no_grad():
        assert torch.allclose(gentle.transform(gentle.vectors), 0.1 * full.transform(full.vectors), atol=1e-7)
        with full.discretized(), gentle.discretized():
            assert torch.allclose(gentle.transform(gentle.vectors), 0.1 * full.transform(full.vectors), atol=1e-7)
        x = full.transform(full.vectors)
        expected = torch.nn.functional.linear(0.1 * x, full.output.proj.weight, full.output.proj.bias)
        assert torch.allclose(gentle.output.proj(gentle.transform(gentle.vectors)), expected, atol=1e-6)
    assert SearchedPrefix.from_config(gentle.to_config()).output_scale == 0.1
    # A config saved before the gain existed (no output_scale) rebuilds the ungained cells it was trained with.
    old = {k: v for k, v in gentle.to_config().items() if k not in ("output_scale", "design", "learn_gain", "relaxation")}
    rebuilt = SearchedPrefix.from_config(old)
    assert rebuilt.output_scale == 1.0 and rebuilt.output_gain is None and rebuilt.design == "shared"


def test_at_minilm_geometry_the_prefix_starts_at_a_plain_prefix_scale() -> None:
    """MiniLM (hidden 384, 12 heads of 32, 6 layers), 14 prefix vectors, 6 cells: the
    generated keys/values start below 0.1 std (unscaled they were ~0.5, against real keys
    of ~1.2 and a plain prefix's ~0.035), so the frozen model is barely disturbed at step 0."""
    from workers.prefix import PlainPrefix

    slots = [AttentionSlot(kv_heads=12, head_dim=32)] * 6
    torch.manual_seed(0)
    searched = SearchedPrefix(length=14, hidden_size=384, slots=slots).eval()
    plain = PlainPrefix(length=14, hidden_size=384, slots=slots, bottleneck=384).eval()
    with torch.no_grad():
        searched_std = max(float(t.std()) for kv in searched() for t in kv)
        plain_std = max(float(t.std()) for kv in plain() for t in kv)
    assert searched_std < 0.1
    assert searched_std < 3 * plain_std


def test_registered_and_rebuilt_from_its_spec_after_discretize() -> None:
    # The export path: discretize, record the spec and the state, rebuild elsewhere.
    candidates = [Candidate("gelu", 0.3, True), Candidate("relu", 0.1, False)]
    prefix = _small(candidates=candidates, residual=False).eval()
    prefix.discretize()
    spec = json.loads(json.dumps(generator_spec(prefix)))
    assert spec["name"] == "searched" and spec["module"] == "workers.nas.generator"
    assert spec["config"]["width"] == 8 and spec["config"]["hidden_size"] == 16 and spec["config"]["cells"] == 3
    rebuilt = generator_from_spec(spec)
    assert isinstance(rebuilt, SearchedPrefix)
    assert rebuilt.candidates == prefix.candidates and not rebuilt.mixed_cells[0].residual
    rebuilt.load_state_dict(prefix.state_dict())
    rebuilt.eval()
    assert rebuilt.is_discrete and rebuilt.architecture() == prefix.architecture()
    with torch.no_grad():
        for (a, b), (c, d) in zip(prefix(), rebuilt(), strict=True):
            assert torch.equal(a, c) and torch.equal(b, d)
    with pytest.raises(ValueError, match="bad candidate"):
        SearchedPrefix.from_config({**spec["config"], "candidates": [{"activation": "relu"}]})
