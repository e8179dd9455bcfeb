"""Task similarity from instruction embeddings and the similarity penalty, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tests.workers.helpers import STRICT_WARNINGS
from workers.coordination import similarity_penalty, task_similarity

pytestmark = STRICT_WARNINGS

R = 1 / math.sqrt(2)


def test_similarity_matrix() -> None:
    # [1,0]·[0,1] = 0; [1,0]·[1,1] / √2 = 1/√2; [0,1]·[1,1] / √2 = 1/√2; diagonal 1.
    s = task_similarity(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    expected = torch.tensor([[1.0, 0.0, R], [0.0, 1.0, R], [R, R, 1.0]])
    assert torch.allclose(s, expected, atol=1e-6)


def test_task_without_instruction_has_nan_similarities() -> None:
    s = task_similarity(torch.tensor([[1.0, 0.0], [math.nan, math.nan], [0.0, 0.0]]))
    assert s.diagonal().tolist() == [1.0, 1.0, 1.0]
    assert torch.isnan(s[0, 1]) and torch.isnan(s[0, 2]) and torch.isnan(s[1, 2])


def test_penalty_by_hand() -> None:
    s = torch.tensor([[1.0, 0.0, R], [0.0, 1.0, R], [R, R, 1.0]])
    means = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    # ‖h0-h1‖² = 1 (S=0), ‖h0-h2‖² = 4 (S=1/√2), ‖h1-h2‖² = 1 + 4 = 5 (S=1/√2)
    # -> 0·1 + 4/√2 + 5/√2 = 9/√2 = 6.363961
    penalty = similarity_penalty(means, s)
    assert float(penalty.detach()) == pytest.approx(9 / math.sqrt(2))
    penalty.backward()
    # ∂/∂h2 = 2·S02·(h2-h0) + 2·S12·(h2-h1) = √2·[0,2] + √2·[-1,2] = √2·[-1, 4]
    assert means.grad is not None
    assert torch.allclose(means.grad[2], torch.tensor([-1.0, 4.0]) * math.sqrt(2))


def test_only_pairs_with_both_sides_take_part() -> None:
    # Task 1 has no instruction (NaN row) and a NaN mean: only pair (0, 2) counts: S=1/√2 · 4.
    s = torch.tensor([[1.0, math.nan, R], [math.nan, 1.0, math.nan], [R, math.nan, 1.0]])
    means = torch.tensor([[0.0, 0.0], [math.nan, math.nan], [0.0, 2.0]], requires_grad=True)
    penalty = similarity_penalty(means, s)
    assert float(penalty.detach()) == pytest.approx(4 * R)
    penalty.backward()
    assert means.grad is not None and torch.isfinite(means.grad).all()
    # The same through a mask, with finite S: task 1 masked out.
    full = torch.tensor([[1.0, 0.5, R], [0.5, 1.0, 0.5], [R, 0.5, 1.0]])
    masked = similarity_penalty(means.detach(), full, mask=torch.tensor([True, False, True]))
    assert float(masked) == pytest.approx(4 * R)


def test_negative_similarity_pushes_apart() -> None:
    # S01 = -1: penalty = -‖h0-h1‖² = -1; its gradient on h1 = -2(h1-h0) points away from h0,
    # so a descent step moves h1 further from h0.
    s = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    means = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    penalty = similarity_penalty(means, s)
    assert float(penalty.detach()) == pytest.approx(-1.0)
    penalty.backward()
    assert means.grad is not None and means.grad[1].tolist() == [-2.0, 0.0]


def test_no_pair_gives_zero_still_attached() -> None:
    means = torch.zeros(2, 3, requires_grad=True)
    penalty = similarity_penalty(means, torch.eye(2), mask=torch.tensor([True, False]))
    assert float(penalty.detach()) == 0.0 and penalty.requires_grad
