"""Projection and conflict scores on gradients small enough to work out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tests.workers.helpers import STRICT_WARNINGS
from workers.coordination import conflict_fraction, conflict_score, project_conflicts

pytestmark = STRICT_WARNINGS


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_two_conflicting_gradients_are_projected_exactly() -> None:
    g1, g2 = t(1, 0), t(-1, 1)
    # g1·g2 = -1 < 0, ‖g2‖² = 2 -> g1' = [1, 0] - (-1/2)[-1, 1] = [0.5, 0.5]
    # ‖g1‖² = 1             -> g2' = [-1, 1] - (-1/1)[1, 0] = [0, 1]
    p1, p2 = project_conflicts([g1, g2])
    assert p1.tolist() == [0.5, 0.5]
    assert p2.tolist() == [0.0, 1.0]
    # Each now stands at 90° to the other's original gradient: g1'·g2 = 0, g2'·g1 = 0.
    assert float(p1 @ g2) >= 0 and float(p2 @ g1) >= 0
    assert float(p1 @ p2) >= 0  # 0.5


def test_inputs_are_not_modified() -> None:
    g1, g2 = t(1, 0), t(-1, 1)
    project_conflicts([g1, g2])
    assert g1.tolist() == [1.0, 0.0] and g2.tolist() == [-1.0, 1.0]


def test_non_conflicting_gradients_are_unchanged() -> None:
    # [1, 0]·[1, 1] = 1 >= 0 and [1, 0]·[0, 1] = 0 >= 0: nothing to project.
    grads = [t(1, 0), t(1, 1), t(0, 1)]
    out = project_conflicts(grads)
    assert [g.tolist() for g in out] == [g.tolist() for g in grads]
    assert all(o is not g for o, g in zip(out, grads, strict=True))


def test_projection_uses_original_gradients_in_the_given_order() -> None:
    g1, g2, g3 = t(1, 0), t(-1, 1), t(-1, -2)
    # Natural order for g1: onto g2 (dot -1, ‖g2‖² 2) -> [0.5, 0.5];
    # then onto g3 (dot -0.5 - 1 = -1.5, ‖g3‖² 5) -> [0.5, 0.5] + 0.3·[-1, -2] = [0.2, -0.1].
    natural = project_conflicts([g1, g2, g3])
    assert torch.allclose(natural[0], t(0.2, -0.1))
    # Order 2, 1, 0 for g1: onto g3 (dot -1) -> [1, 0] + 0.2·[-1, -2] = [0.8, -0.4];
    # then onto g2 (dot -0.8 - 0.4 = -1.2) -> [0.8, -0.4] + 0.6·[-1, 1] = [0.2, 0.2].
    reordered = project_conflicts([g1, g2, g3], order=[2, 1, 0])
    assert torch.allclose(reordered[0], t(0.2, 0.2))
    # g2 in natural order: onto g1 (dot -1, ‖g1‖² 1) -> [0, 1]; onto the ORIGINAL g3
    # (dot [0,1]·[-1,-2] = -2, ‖g3‖² 5) -> [0, 1] + 0.4·[-1, -2] = [-0.4, 0.2].
    assert torch.allclose(natural[1], t(-0.4, 0.2))


def test_zero_gradients_are_skipped() -> None:
    # Nothing to project onto a zero vector; the zero vector stays zero.
    out = project_conflicts([t(1, 0), t(0, 0)])
    assert out[0].tolist() == [1.0, 0.0] and out[1].tolist() == [0.0, 0.0]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="permutation"):
        project_conflicts([t(1, 0), t(0, 1)], order=[0, 0])
    with pytest.raises(ValueError, match="flat"):
        project_conflicts([torch.zeros(2, 2), torch.zeros(2, 2)])
    with pytest.raises(ValueError, match="differ in length"):
        conflict_score([t(1, 0), t(1, 0, 0)])


@pytest.mark.parametrize(
    ("g2", "expected"),
    [((-2.0, 0.0), 1.0), ((0.0, 3.0), 0.0), ((5.0, 0.0), -1.0)],
    ids=["opposed", "orthogonal", "aligned"],
)
def test_conflict_score_of_one_pair(g2: tuple[float, float], expected: float) -> None:
    # -cos([1, 0], g2): opposed -> -(-1) = 1, orthogonal -> 0, aligned -> -1.
    assert conflict_score([t(1, 0), t(*g2)]) == pytest.approx(expected)


def test_conflict_score_of_three_tasks() -> None:
    # g1 = [1, 0], g2 = [0, 1], g3 = [-1, 0]: cos12 = 0, cos13 = -1, cos23 = 0
    # -> mean of -cos over the 3 pairs = (0 + 1 + 0) / 3 = 1/3; one pair of 3 conflicts.
    grads = [t(1, 0), t(0, 1), t(-1, 0)]
    assert conflict_score(grads) == pytest.approx(1 / 3)
    assert conflict_fraction(grads) == pytest.approx(1 / 3)
    # g1 = [1, 0], g2 = [-1, 1], g3 = [1, 1]: cos12 = -1/√2, cos13 = 1/√2, cos23 = 0
    # -> (1/√2 - 1/√2 + 0) / 3 = 0, though one pair in three conflicts.
    grads = [t(1, 0), t(-1, 1), t(1, 1)]
    assert conflict_score(grads) == pytest.approx(0.0, abs=1e-7)
    assert conflict_fraction(grads) == pytest.approx(1 / 3)


def test_zero_gradient_pairs_count_as_zero() -> None:
    # Pairs: (a, b) opposed -> 1; (a, 0) -> 0; (b, 0) -> 0; mean 1/3. The zero pairs do not conflict.
    grads = [t(1, 0), t(-1, 0), t(0, 0)]
    assert conflict_score(grads) == pytest.approx(1 / 3)
    assert conflict_fraction(grads) == pytest.approx(1 / 3)
    # Fewer than two tasks: no pairs, no conflict.
    assert conflict_score([t(1, 0)]) == 0.0 and conflict_fraction([t(1, 0)]) == 0.0


def test_projection_lowers_the_conflict_of_two_opposed_tasks() -> None:
    # Before: -cos([1,0], [-1,1]) = 1/√2. After: -cos([0.5,0.5], [0,1]) = -(0.5 / (√0.5·1)) = -1/√2.
    grads = [t(1, 0), t(-1, 1)]
    before = conflict_score(grads)
    after = conflict_score(project_conflicts(grads))
    assert before == pytest.approx(1 / math.sqrt(2))
    assert after == pytest.approx(-1 / math.sqrt(2))
    assert after < before
