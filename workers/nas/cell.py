"""A mixed cell: the continuous relaxation of one choice among candidate operations.

``cell(x) = x + Σ_j w_j · o_j(x)`` with ``w`` the mixture weights over the *active*
candidates (the cell does not own ``α``; :class:`~workers.nas.generator.SearchedPrefix`
does, so the architecture state of all cells lives in one parameter and two buffers).

Two designs (``design``):

- ``distinct`` (the default): every (activation, LayerNorm) pair has its **own**
  ``Linear(d, d)``, so two candidates are two different functions, not one pre-activation
  seen through two pointwise maps. Each candidate's output is normalised to unit RMS per
  prefix vector (no affine) before its dropout, and the cell multiplies the mixture by one
  learnable gain vector shared by all its candidates: a candidate cannot win the search by
  being louder (a LayerNorm candidate used to, with its unit-scale output against a plain
  linear's ~0.3), only by pointing in a better direction. Candidates differing only by
  dropout share a map (dropout is what makes them different, and only in training).
  Cost: ``n_maps · (d² + d)`` + ``2d`` (input LayerNorm) + ``d`` (gain) per cell.
- ``shared`` (artifacts exported before the distinct design): one ``Linear(d, d)`` and one
  LayerNorm for every candidate, unnormalised, no gain; candidates differ only by the
  pointwise activation and dropout. Kept so those artifacts predict as they were trained.

Residual connection (on by default). Without it, six stacked cells at initialisation are
six random linear maps, each shrinking the signal and each adding dropout noise: the
prefix vectors barely reach the output layer and their gradients vanish. With
``x + cell(x)`` the vectors pass through unchanged at worst, and each cell learns a
correction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from workers.nas.candidates import Candidate, check_unique_names

DESIGNS = ("distinct", "shared")
RMS_EPS = 1e-6  # keeps an all-zero candidate output (a dead relu) finite after normalisation


def rms_normalize(h: torch.Tensor, eps: float = RMS_EPS) -> torch.Tensor:
    """``h / sqrt(mean(h²) + eps)`` over the last dimension: every row gets unit RMS."""
    return h * torch.rsqrt(h.square().mean(dim=-1, keepdim=True) + eps)


def map_key(candidate: Candidate) -> str:
    """The name of the linear map a candidate uses in the distinct design (dropout shares it)."""
    return candidate.activation + ("-ln" if candidate.layernorm else "")


class MixedCell(nn.Module):
    """One searched cell over ``candidates`` (see the module docstring for the two designs).

    Raises:
        ValueError: ``width < 1``, an unknown design or an invalid candidate set.
    """

    def __init__(self, width: int, candidates: Sequence[Candidate], *, residual: bool = True,
                 design: str = "distinct") -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"cell width must be >= 1, got {width}")
        if design not in DESIGNS:
            raise ValueError(f"unknown cell design {design!r}; choose one of {', '.join(DESIGNS)}")
        check_unique_names(candidates)
        self.width = width
        self.candidates = tuple(candidates)
        self.residual = residual
        self.design = design
        # Only created when some candidate uses it, so a LN-free space pays nothing for it.
        self.norm: nn.LayerNorm | None = nn.LayerNorm(width) if any(c.layernorm for c in self.candidates) else None
        self.linear: nn.Linear | None = None
        self.maps: nn.ModuleDict | None = None
        self.gain: nn.Parameter | None = None
        if design == "shared":
            self.linear = nn.Linear(width, width)
        else:
            keys = list(dict.fromkeys(map_key(c) for c in self.candidates))
            self.maps = nn.ModuleDict({key: nn.Linear(width, width) for key in keys})
            self.gain = nn.Parameter(torch.ones(width))

    def _pre(self, x: torch.Tensor, layernorm: bool) -> torch.Tensor:
        if not layernorm:
            return x
        if self.norm is None:  # unreachable for candidates given to __init__
            raise ValueError("this cell has no LayerNorm")
        out: torch.Tensor = self.norm(x)
        return out

    def _activated(self, x: torch.Tensor, candidate: Candidate, shared: dict[bool, torch.Tensor] | None = None) -> torch.Tensor:
        """``act(W LN?(x))``, normalised to unit RMS in the distinct design (before any dropout).

        ``shared`` caches the shared design's one linear output per LayerNorm choice, so that
        design applies its linear at most twice per forward whatever the candidate count.
        """
        if self.maps is None:
            assert self.linear is not None
            cache = {} if shared is None else shared
            if candidate.layernorm not in cache:
                cache[candidate.layernorm] = self.linear(self._pre(x, candidate.layernorm))
            return candidate.activate(cache[candidate.layernorm])
        pre = self._pre(x, candidate.layernorm)
        return rms_normalize(candidate.activate(self.maps[map_key(candidate)](pre)))

    def _finish(self, mixed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.gain is not None:
            mixed = mixed * self.gain
        return x + mixed if self.residual else mixed

    def candidate_output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """``o_index(x)`` alone (its dropout in training), without residual, weight or gain."""
        candidate = self.candidates[index]
        return nn.functional.dropout(self._activated(x, candidate), p=candidate.dropout, training=self.training)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: Sequence[int]) -> torch.Tensor:
        """The relaxed cell: ``x + gain ⊙ Σ_{j ∈ active} weights[j] · o_j(x)``.

        ``weights`` is indexed by candidate position; candidates not listed in ``active``
        are neither computed nor mixed. Each (activation, LayerNorm) output is computed
        once; only the dropouts are drawn per candidate.

        Raises:
            ValueError: ``active`` is empty.
        """
        if not active:
            raise ValueError("a mixed cell needs at least one active candidate")
        activated: dict[tuple[bool, str], torch.Tensor] = {}
        shared: dict[bool, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for j in active:
            candidate = self.candidates[j]
            key = (candidate.layernorm, candidate.activation)
            if key not in activated:
                activated[key] = self._activated(x, candidate, shared)
            out = nn.functional.dropout(activated[key], p=candidate.dropout, training=self.training)
            term = weights[j] * out
            total = term if total is None else total + term
        assert total is not None
        return self._finish(total, x)

    def forward_one(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """The discrete cell: exactly ``x + gain ⊙ o_index(x)`` (no mixture weight)."""
        return self._finish(self.candidate_output(x, index), x)
