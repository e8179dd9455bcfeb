"""A mixed cell: the continuous relaxation of one choice among candidate operations.

``cell(x) = x + Σ_j w_j · o_j(x)`` with ``w = softmax(α)`` over the *active* candidates
(the cell does not own ``α``; :class:`~workers.nas.generator.SearchedPrefix` does, so the
architecture state of all cells lives in one parameter and two buffers).

Weight sharing. Every candidate is ``dropout(act(linear(LN?(x))))`` with the *same*
``Linear(d, d)`` and the same LayerNorm, so a cell costs ``d² + d`` (+ ``2d`` for the
LayerNorm) parameters whatever the number of candidates. The linear is applied at most
twice per forward (to ``x`` and to ``LN(x)``), each activation at most once per
(LN, activation) pair; only the dropouts are drawn per candidate, since each candidate's
dropout is what makes it a different operation in training.

Residual connection (on by default). Without it, six stacked cells at initialisation are
six random linear maps, each shrinking the signal (PyTorch's default Linear init has a
variance gain of about 1/3) and each adding dropout noise of up to 0.5: the prefix vectors
barely reach the output layer and their gradients vanish. With ``x + cell(x)`` the
vectors pass through unchanged at worst, and each cell learns a correction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from workers.nas.candidates import Candidate, check_unique_names


class MixedCell(nn.Module):
    """One searched cell over ``candidates``, all sharing one ``Linear(width, width)``.

    Raises:
        ValueError: ``width < 1`` or an invalid candidate set.
    """

    def __init__(self, width: int, candidates: Sequence[Candidate], *, residual: bool = True) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"cell width must be >= 1, got {width}")
        check_unique_names(candidates)
        self.width = width
        self.candidates = tuple(candidates)
        self.residual = residual
        self.linear = nn.Linear(width, width)
        # Only created when some candidate uses it, so a LN-free space pays nothing for it.
        self.norm: nn.LayerNorm | None = nn.LayerNorm(width) if any(c.layernorm for c in self.candidates) else None

    def _shared(self, x: torch.Tensor, layernorm: bool) -> torch.Tensor:
        if layernorm:
            if self.norm is None:  # unreachable for candidates given to __init__
                raise ValueError("this cell has no LayerNorm")
            x = self.norm(x)
        out: torch.Tensor = self.linear(x)
        return out

    def candidate_output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """``o_index(x) = dropout(act(linear(LN?(x))))`` alone, without residual or weight."""
        candidate = self.candidates[index]
        return candidate.finish(self._shared(x, candidate.layernorm), training=self.training)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: Sequence[int]) -> torch.Tensor:
        """The relaxed cell: ``x + Σ_{j ∈ active} weights[j] · o_j(x)``.

        ``weights`` is indexed by candidate position (the softmax over active candidates);
        candidates not listed in ``active`` are neither computed nor mixed.

        Raises:
            ValueError: ``active`` is empty.
        """
        if not active:
            raise ValueError("a mixed cell needs at least one active candidate")
        shared: dict[bool, torch.Tensor] = {}
        activated: dict[tuple[bool, str], torch.Tensor] = {}
        total: torch.Tensor | None = None
        for j in active:
            candidate = self.candidates[j]
            if candidate.layernorm not in shared:
                shared[candidate.layernorm] = self._shared(x, candidate.layernorm)
            key = (candidate.layernorm, candidate.activation)
            if key not in activated:
                activated[key] = candidate.activate(shared[candidate.layernorm])
            out = nn.functional.dropout(activated[key], p=candidate.dropout, training=self.training)
            term = weights[j] * out
            total = term if total is None else total + term
        assert total is not None
        return x + total if self.residual else total

    def forward_one(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """The discrete cell: exactly ``x + o_index(x)`` (no softmax weighting)."""
        out = self.candidate_output(x, index)
        return x + out if self.residual else out
