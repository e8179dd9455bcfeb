"""The pure rules of the search: entropy, masked softmax, argmax and pruning, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tests.workers.helpers import STRICT_WARNINGS
from workers.nas.rules import discretize_choice, masked_softmax, prune_rule, softmax_entropy

pytestmark = STRICT_WARNINGS


def test_entropy_of_two_equal_logits_is_ln2() -> None:
    # softmax([0, 0]) = [1/2, 1/2]; H = -2 · (1/2 · ln 1/2) = ln 2 = 0.693147...
    h = softmax_entropy(torch.tensor([0.0, 0.0]))
    assert h.item() == pytest.approx(0.6931471805599453, abs=1e-7)


def test_entropy_of_quarter_three_quarters() -> None:
    # softmax([ln 1, ln 3]) = [1/4, 3/4];
    # H = -(0.25 · ln 0.25 + 0.75 · ln 0.75) = -(0.25 · -1.386294 + 0.75 · -0.287682)
    #   = 0.346574 + 0.215762 = 0.562335...
    h = softmax_entropy(torch.tensor([math.log(1.0), math.log(3.0)], dtype=torch.float64))
    assert h.item() == pytest.approx(0.5623351446188083, abs=1e-12)


def test_masked_candidate_is_left_out_of_entropy() -> None:
    # The third logit (huge) is pruned: H is that of [ln 1, ln 3] alone, 0.562335...
    logits = torch.tensor([0.0, math.log(3.0), 50.0], dtype=torch.float64)
    h = softmax_entropy(logits, torch.tensor([True, True, False]))
    assert h.item() == pytest.approx(0.5623351446188083, abs=1e-12)
    # A single active candidate: p = 1, H = 0 exactly.
    assert softmax_entropy(logits, torch.tensor([False, True, False])).item() == 0.0


def test_entropy_rows_and_uniform_maximum() -> None:
    # Uniform over 24: H = ln 24 = 3.178054; over 3 active of 4: ln 3 = 1.098612.
    logits = torch.zeros(2, 24)
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 3:] = False
    h = softmax_entropy(logits, mask)
    torch.testing.assert_close(h, torch.tensor([math.log(24), math.log(3)]))


def test_entropy_gradient_is_finite_and_zero_on_masked_entries() -> None:
    logits = torch.tensor([0.3, -0.2, 1.0, 2.0], requires_grad=True)
    softmax_entropy(logits, torch.tensor([True, True, False, True])).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[2].item() == 0.0
    # dH/dα_i = -p_i (ln p_i + H): check against the closed form on the active entries.
    active = torch.tensor([0.3, -0.2, 2.0])
    p = active.softmax(-1)
    h = -(p * p.log()).sum()
    expected = -p * (p.log() + h)
    torch.testing.assert_close(logits.grad[[0, 1, 3]], expected)


def test_entropy_refuses_a_row_with_nothing_active() -> None:
    with pytest.raises(ValueError, match="at least one active"):
        softmax_entropy(torch.zeros(3), torch.zeros(3, dtype=torch.bool))


def test_masked_softmax_renormalises_over_active() -> None:
    # [ln 1, (pruned), ln 3] -> [1/4, 0, 3/4]
    w = masked_softmax(torch.tensor([0.0, 9.0, math.log(3.0)]), torch.tensor([True, False, True]))
    torch.testing.assert_close(w, torch.tensor([0.25, 0.0, 0.75]))


def test_discretize_choice_argmax_mask_and_ties() -> None:
    assert discretize_choice([0.1, 0.7, 0.2]) == 1
    assert discretize_choice([0.1, 0.7, 0.2], [True, False, True]) == 2
    assert discretize_choice([0.4, 0.4, 0.2]) == 0  # tie: lowest index
    assert discretize_choice(torch.tensor([0.2, 0.4, 0.4]), torch.tensor([True, True, True])) == 1
    with pytest.raises(ValueError):
        discretize_choice([0.5, 0.5], [False, False])


def _step(weights: list[float], active: torch.Tensor, streak: torch.Tensor, fraction: float, patience: int):
    return prune_rule(torch.tensor(weights), active, streak, threshold_fraction=fraction, patience=patience)


def test_prune_rule_prunes_after_patience_consecutive_checks() -> None:
    # Three candidates, fraction 0.5, patience 2. Threshold = 0.5 / 3 = 0.1667.
    active = torch.tensor([True, True, True])
    streak = torch.zeros(3, dtype=torch.long)
    # Check 1: weights [0.7, 0.2, 0.1]: only 0.1 is below -> streak [0, 0, 1], nothing pruned.
    d = _step([0.7, 0.2, 0.1], active, streak, 0.5, 2)
    assert d.streak.tolist() == [0, 0, 1] and d.prune.tolist() == [False, False, False]
    # Check 2: still below -> streak reaches 2 = patience -> candidate 2 pruned (streak reset).
    d = _step([0.7, 0.2, 0.1], active, d.streak, 0.5, 2)
    assert d.prune.tolist() == [False, False, True] and d.streak.tolist() == [0, 0, 0]
    active = active & ~d.prune
    # Two active now: threshold 0.5 / 2 = 0.25. Renormalised weights 0.7/0.9 = 0.778, 0.2/0.9 = 0.222.
    d = _step([0.778, 0.222, 0.0], active, d.streak, 0.5, 2)
    assert d.streak.tolist() == [0, 1, 0] and not d.prune.any()
    d = _step([0.778, 0.222, 0.0], active, d.streak, 0.5, 2)
    assert d.prune.tolist() == [False, True, False]
    active = active & ~d.prune
    # One left (weight 1.0): never pruned, whatever happens.
    for _ in range(5):
        d = _step([1.0, 0.0, 0.0], active, d.streak, 0.5, 1)
        assert not d.prune.any()


def test_prune_rule_streak_must_be_consecutive() -> None:
    # Threshold 0.5 / 2 = 0.25; candidate 1 goes below, above, below: never two in a row.
    active = torch.tensor([True, True])
    streak = torch.zeros(2, dtype=torch.long)
    for weights in ([0.8, 0.2], [0.7, 0.3], [0.8, 0.2], [0.6, 0.4], [0.9, 0.1]):
        d = _step(weights, active, streak, 0.5, 2)
        assert not d.prune.any()
        streak = d.streak
    assert streak.tolist() == [0, 1]


def test_prune_rule_never_prunes_the_last_or_the_argmax() -> None:
    # Weights that do not sum to one, all under the threshold 0.5 / 2 = 0.25, tied:
    # the argmax (lowest index on the tie) stays, the other goes.
    d = _step([0.05, 0.05], torch.tensor([True, True]), torch.zeros(2, dtype=torch.long), 0.5, 1)
    assert d.prune.tolist() == [False, True]
    # A single active candidate below the threshold is kept.
    d = _step([0.0, 0.01], torch.tensor([False, True]), torch.zeros(2, dtype=torch.long), 0.9, 1)
    assert d.prune.tolist() == [False, False]


def test_prune_rule_validates_arguments() -> None:
    args = (torch.tensor([0.5, 0.5]), torch.tensor([True, True]), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="threshold_fraction"):
        prune_rule(*args, threshold_fraction=1.0, patience=1)
    with pytest.raises(ValueError, match="patience"):
        prune_rule(*args, threshold_fraction=0.3, patience=0)
