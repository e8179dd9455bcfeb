"""The search itself (workers.peml.PemlTraining on a real SearchedPrefix): α's optimizer,
the entropy and temperature schedules, the reports, step-wise pruning, finalization, and a
toy problem every relaxation must solve."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from searchsvc.spec import PemlSpec
from tests.workers.helpers import STRICT_WARNINGS
from workers.nas.candidates import Candidate
from workers.nas.generator import SearchedPrefix
from workers.peml import GradientStats, PemlTraining, entropy_weight, gumbel_temperature
from workers.prefix import AttentionSlot

pytestmark = STRICT_WARNINGS

SLOTS = [AttentionSlot(kv_heads=1, head_dim=4)]
EPS = 1e-8  # Adam's default epsilon


class Holder(nn.Module):
    """The one thing PemlTraining asks of a model: a ``prefix`` attribute and its parameters."""

    def __init__(self, prefix: SearchedPrefix) -> None:
        super().__init__()
        self.prefix = prefix


def _prefix(**kwargs: object) -> SearchedPrefix:
    torch.manual_seed(0)
    options: dict[str, object] = {"length": 3, "hidden_size": 8, "slots": SLOTS, "width": 8, "cells": 2}
    options.update(kwargs)
    return SearchedPrefix(**options)  # type: ignore[arg-type]


def _training(prefix: SearchedPrefix, *, arch_lr: float = 0.1, max_epochs: int = 2, steps_per_epoch: int | None = 5,
              entropy_lambda: float = 0.0, **spec: object) -> PemlTraining:
    return PemlTraining(Holder(prefix), PemlSpec(**spec), arch_lr=arch_lr, max_epochs=max_epochs,  # type: ignore[arg-type]
                        steps_per_epoch=steps_per_epoch, entropy_lambda=entropy_lambda)


# ---- α's optimizer ----------------------------------------------------------------------


def test_alpha_does_not_move_without_task_gradient_or_entropy() -> None:
    prefix = _prefix()
    training = _training(prefix, prune_threshold=0.0)
    training.begin_epoch(1)
    before = prefix.alpha.detach().clone()
    for step in range(5):
        prefix.alpha.grad = torch.zeros_like(prefix.alpha) if step % 2 else None  # zero, or never touched
        training.step_hook(step=step)
    assert torch.equal(prefix.alpha.detach(), before)


@pytest.mark.parametrize("decay", [0.0, 1e-4])
def test_a_constant_gradient_moves_alpha_by_the_hand_computed_adam_steps(decay: float) -> None:
    """Adam with a constant gradient g: m̂_t = g and v̂_t = g² at every step (bias
    correction), so each step is ``lr · g / (|g| + ε)``: 0.1 per step whatever the gradient's
    size, even at α's real scale (~1e-5). Decoupled decay first shrinks α by ``1 − lr · wd``.
    A coupled decay of 1e-3 (the old setting) would instead add 1e-3 · α to a 2e-5 gradient
    and steer the step by it; here nothing but g and the shrink moves α."""
    prefix = _prefix(cells=1, candidates=[Candidate("relu", 0.1, False), Candidate("tanh", 0.1, False)])
    with torch.no_grad():
        prefix.alpha.copy_(torch.tensor([[0.5, -0.5]]))
    training = _training(prefix, prune_threshold=0.0, arch_weight_decay=decay)
    training.begin_epoch(1)
    g = torch.tensor([[2e-5, -3.0]])
    expected = [0.5, -0.5]
    for step in range(3):
        prefix.alpha.grad = g.clone()
        training.step_hook(step=step)
        expected = [a * (1 - 0.1 * decay) - 0.1 * gi / (abs(gi) + EPS) for a, gi in zip(expected, g[0].tolist(), strict=True)]
    # decay 0: [0.5 − 3 · 0.1 · 2e-5 / (2e-5 + 1e-8), −0.5 + 0.3] = [0.200150, −0.2]
    if decay == 0.0:
        assert expected == pytest.approx([0.5 - 0.3 * 2e-5 / (2e-5 + 1e-8), -0.2], abs=1e-9)
        assert expected[0] == pytest.approx(0.200150, abs=1e-6)
    torch.testing.assert_close(prefix.alpha.detach(), torch.tensor([expected]), atol=1e-6, rtol=0)


def test_coupled_decay_is_refused() -> None:
    with pytest.raises(ValueError, match="arch_weight_decay"):
        PemlSpec(arch_weight_decay=1e-3)


# ---- schedules ----------------------------------------------------------------------------


def test_entropy_weight_rises_linearly_over_the_search() -> None:
    # target 0.1 over 10 steps: 0.01 after the first, 0.05 after the fifth, 0.1 from the tenth on.
    assert [entropy_weight(s, target=0.1, total_steps=10) for s in (0, 4, 9, 30)] == pytest.approx([0.01, 0.05, 0.1, 0.1])
    assert entropy_weight(0, target=0.1, total_steps=10, schedule="constant") == 0.1


def test_the_training_uses_the_scheduled_lambda_for_the_entropy_gradient() -> None:
    """λ_t · ∇H joins α's gradient: with no task gradient, one Adam step moves α by
    ``lr · sign(∇H)`` on every entry whose entropy gradient is not 0 (away from uniform)."""
    prefix = _prefix(cells=1, candidates=[Candidate("relu", 0.1, False), Candidate("tanh", 0.1, False)])
    with torch.no_grad():
        prefix.alpha.copy_(torch.tensor([[0.2, 0.0]]))
    training = _training(prefix, entropy_lambda=0.5, max_epochs=2, steps_per_epoch=5, prune_threshold=0.0)
    training.begin_epoch(1)
    prefix.alpha.grad = torch.zeros_like(prefix.alpha)
    training.step_hook(step=4)
    assert training.last_lambda == pytest.approx(0.5 * 5 / 10)
    # H decreases as the larger logit grows: α moves to [0.3, −0.1].
    torch.testing.assert_close(prefix.alpha.detach(), torch.tensor([[0.3, -0.1]]), atol=1e-6, rtol=0)
    # Without steps_per_epoch the schedule moves by epochs: epoch 1 of 2 -> half the target.
    by_epoch = _training(_prefix(), entropy_lambda=0.5, steps_per_epoch=None)
    by_epoch.begin_epoch(1)
    assert by_epoch.entropy_lambda_at(123) == pytest.approx(0.25)


def test_gumbel_temperature_anneals_geometrically() -> None:
    # 1 -> 0.1 over 11 steps: the middle step is √0.1 = 0.316228.
    values = [gumbel_temperature(s, start=1.0, end=0.1, total_steps=11) for s in (0, 5, 10, 50)]
    assert values == pytest.approx([1.0, 0.316228, 0.1, 0.1], abs=1e-6)
    prefix = _prefix(relaxation="gumbel")
    training = _training(prefix, max_epochs=2, steps_per_epoch=5, gumbel_temperature=[1.0, 0.1], prune_threshold=0.0)
    training.begin_epoch(2)  # global step 5 of 10
    assert prefix.temperature == pytest.approx(0.1 ** (5 / 9))


# ---- reports ------------------------------------------------------------------------------


def test_gradient_snr_by_hand() -> None:
    # Gradients [1, 0] and [3, 0]: mean [2, 0], unbiased variance [2, 0]: SNR 2 / √2 = 1.414214.
    stats = GradientStats()
    stats.add(torch.tensor([1.0, 0.0]))
    stats.add(torch.tensor([3.0, 0.0]))
    assert stats.snr() == pytest.approx(math.sqrt(2), abs=1e-9)
    assert stats.mean_norm() == pytest.approx(2.0)
    assert GradientStats().snr() == 0.0


def test_report_top_weights_convergence_and_variance_by_hand() -> None:
    """8 candidates, cell 0 α = [ln 9, 0 × 7]: top weight 9/16 = 0.5625 > 0.5, α variance
    ln²9 · (1/8 − 1/64) = 0.528043; cell 1 uniform: top 1/8, variance 0, not converged."""
    prefix = _prefix(alpha_init_std=0.0)
    with torch.no_grad():
        prefix.alpha[0, 0] = math.log(9.0)
    training = _training(prefix)
    training.begin_epoch(1)
    report = training.report(training.prune())
    assert report["nas/cell0/top_weight"] == pytest.approx(0.5625)
    assert report["nas/cell1/top_weight"] == pytest.approx(0.125)
    assert report["nas/converged"] == 0.0 and report["nas/top_weight_min"] == pytest.approx(0.125)
    assert report["nas/alpha_variance"] == pytest.approx(math.log(9.0) ** 2 * 7 / 64 / 2, abs=1e-6)
    assert report["nas/entropy_max"] == pytest.approx(2 * math.log(8))
    with torch.no_grad():
        prefix.alpha[1, 3] = math.log(9.0)
    assert training.report([[], []])["nas/converged"] == 1.0


# ---- pruning and finalization ----------------------------------------------------------------


def test_pruning_runs_every_k_steps_and_the_epoch_report_collects_it() -> None:
    prefix = _prefix(cells=1, alpha_init_std=0.0)
    with torch.no_grad():
        prefix.alpha[0, 2] = -10.0  # weight ~ 4e-6, far under 0.5 / 8
    training = _training(prefix, arch_lr=1e-9, prune_every=2, prune_patience=1, prune_threshold=0.5)
    training.begin_epoch(1)
    prefix.alpha.grad = torch.zeros_like(prefix.alpha)
    training.step_hook(step=0)
    assert bool(prefix.active[0, 2])  # no check yet
    training.step_hook(step=1)  # the check after the second step prunes it
    assert not bool(prefix.active[0, 2])
    name = prefix.candidates[2].name
    assert training.prune() == [[name]]
    assert training.prune() == [[]]  # collected once


def test_finalize_after_the_search_epochs_freezes_the_argmax() -> None:
    prefix = _prefix()
    with torch.no_grad():
        prefix.alpha[0, 3] = 1.0
        prefix.alpha[1, 5] = 1.0
    training = _training(prefix, max_epochs=3, retrain_epochs=1)
    assert training.search_epochs == 2
    training.begin_epoch(2)
    assert training.searching and training.alpha_trains
    assert [training.scores_objective(e) for e in (1, 2, 3)] == [False, False, True]
    assert _training(_prefix(), max_epochs=3).scores_objective(1)  # no retrain: every epoch counts
    training.begin_epoch(3)
    assert not training.searching and not training.alpha_trains and not prefix.alpha.requires_grad
    assert prefix.active.sum(dim=1).tolist() == [1, 1]
    assert training.finalize() == [prefix.candidates[3].name, prefix.candidates[5].name]
    before = prefix.alpha.detach().clone()
    training.step_hook(step=11)
    assert torch.equal(prefix.alpha, before)
    report = training.report(training.prune())
    assert report["nas/searching"] == 0.0 and report["nas/converged"] == 1.0
    with pytest.raises(ValueError, match=r"peml.retrain_epochs \(3\)"):
        _training(_prefix(), max_epochs=3, retrain_epochs=3)


def test_gap_metrics_keep_the_last_search_gap() -> None:
    training = _training(_prefix(), max_epochs=2, retrain_epochs=1)
    training.begin_epoch(1)
    assert training.gap_metrics({"avg_dev_score": 0.7}, {"avg_dev_score": 0.6})["search_discretization_gap"] == pytest.approx(0.1)
    training.begin_epoch(2)
    after = training.gap_metrics({"avg_dev_score": 0.8}, {"avg_dev_score": 0.8})
    assert after["discretization_gap"] == 0.0 and after["search_discretization_gap"] == pytest.approx(0.1)


# ---- a toy search every relaxation must solve ------------------------------------------------


@pytest.mark.parametrize("relaxation", ["softmax", "gumbel", "ste"])
def test_the_search_finds_the_clearly_best_candidate(relaxation: str) -> None:
    """Weights frozen; the target is the prefix's own keys/values with each cell reduced to a
    known candidate, so that candidate is the one best architecture. Only α trains (Adam at
    0.1, entropy λ rising to 0.01 over 120 steps): each cell's entropy falls near 0 (of
    ln 4 = 1.386) and its argmax is the target's candidate.

    Over 6 weight initialisations (not run here) softmax and ste found it 6/6 times, Gumbel
    3/6 (its sampled weights make α's gradient far noisier in 120 steps); a larger λ (0.05)
    commits before the task has spoken: softmax 5/6 with 2 cells, 2/6 with one."""
    candidates = [Candidate(a, 0.0, False) for a in ("relu", "tanh", "leaky_relu", "gelu")]
    prefix = _prefix(cells=2, candidates=candidates, relaxation=relaxation, alpha_init_std=0.0, width=8, length=6)
    best = [1, 3]  # tanh in cell 0, gelu in cell 1
    with torch.no_grad():
        for cell, index in enumerate(best):
            prefix.alpha[cell, index] = 10.0
        prefix.eval()
        with prefix.discretized():
            target = [(k.clone(), v.clone()) for k, v in prefix()]
        prefix.alpha.zero_()
    for name, p in prefix.named_parameters():
        p.requires_grad_(name == "alpha")
    steps = 120
    training = _training(prefix, arch_lr=0.1, max_epochs=1, steps_per_epoch=steps, entropy_lambda=0.01,
                         prune_threshold=0.0, gumbel_temperature=[1.0, 0.1])
    training.begin_epoch(1)
    prefix.train()
    torch.manual_seed(1)
    for step in range(steps):
        loss = sum(((k - tk).square().mean() + (v - tv).square().mean()) for (k, v), (tk, tv) in zip(prefix(), target, strict=True))
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        training.step_hook(step=step)
    entropies = prefix.cell_entropies().tolist()
    assert prefix.choices() == best, (relaxation, prefix.cell_weights())
    assert max(entropies) < 0.1, (relaxation, entropies)
    assert training.report([[], []])["nas/converged"] == 1.0
