"""The pure arithmetic of the architecture search: masked softmax, entropy, argmax, pruning.

Kept apart from the modules so each rule can be checked by hand on a few numbers, and
so the generator's methods stay thin. Every function takes a boolean ``mask`` of active
candidates: pruned candidates are left out of the softmax entirely (not merely given a
small weight), so the remaining weights always sum to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


def _full_mask(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(logits, dtype=torch.bool)
    mask = mask.to(device=logits.device, dtype=torch.bool).expand_as(logits)
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("every row needs at least one active candidate")
    return mask


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dimension among active entries; exactly 0 for inactive ones.

    Filling inactive logits with ``-inf`` keeps the gradient finite (softmax's backward
    multiplies by the weight, which is 0 there) and renormalises over the active entries.

    Raises:
        ValueError: a row with no active entry (its softmax would be undefined).
    """
    mask = _full_mask(logits, mask)
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


def softmax_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``H(softmax(logits)) = -Σ p log p`` in nats over the last dimension, inactive entries left out.

    Differentiable and NaN-free: the ``0 · log 0`` of inactive entries is replaced by an
    exact 0 before the product, so no ``0 · -inf`` reaches the forward or the backward.
    ``H`` lies in ``[0, ln n_active]``; the trainer adds ``λ · H`` to the loss to push each
    cell towards a single operation, which shrinks the discretization gap.

    Raises:
        ValueError: a row with no active entry.
    """
    mask = _full_mask(logits, mask)
    filled = logits.masked_fill(~mask, float("-inf"))
    p = torch.softmax(filled, dim=-1)
    log_p = torch.log_softmax(filled, dim=-1).masked_fill(~mask, 0.0)
    return -(p * log_p).sum(dim=-1)


def discretize_choice(weights: torch.Tensor | Sequence[float], mask: torch.Tensor | Sequence[bool] | None = None) -> int:
    """Index of the largest active weight (or logit); ties go to the lowest index.

    Ties are broken by position so that a model always discretizes the same way, and so
    that the pruning rule can promise to keep exactly this candidate.

    Raises:
        ValueError: not a 1-D sequence, or no active entry.
    """
    w = torch.as_tensor(weights).detach().to(torch.float64)
    if w.dim() != 1 or w.numel() == 0:
        raise ValueError(f"weights must be a non-empty 1-D sequence, got shape {tuple(w.shape)}")
    if mask is not None:
        m = torch.as_tensor(mask, dtype=torch.bool, device=w.device)
        if m.shape != w.shape:
            raise ValueError(f"mask shape {tuple(m.shape)} does not match weights {tuple(w.shape)}")
        if not bool(m.any()):
            raise ValueError("no active candidate to choose")
        w = w.masked_fill(~m, float("-inf"))
    best = w.max()
    return int(torch.nonzero(w == best)[0, 0])


class PruneDecision(NamedTuple):
    """Outcome of one pruning check: the updated below-threshold streaks and what to prune now."""

    streak: torch.Tensor  # long, consecutive checks each candidate has spent under the threshold
    prune: torch.Tensor  # bool, candidates to deactivate now


def prune_rule(
    weights: torch.Tensor,
    active: torch.Tensor,
    streak: torch.Tensor,
    *,
    threshold_fraction: float,
    patience: int,
) -> PruneDecision:
    """One end-of-epoch pruning check for one cell.

    An active candidate is *below* when its weight is under ``threshold_fraction / n_active``
    (a fraction of the uniform weight, so the rule means the same for 24 or 3 candidates).
    Its streak counts consecutive checks below; any check above resets it to 0. A streak
    reaching ``patience`` prunes the candidate, which is why a single noisy epoch cannot
    prune anything when ``patience > 1``. The argmax of the active weights (lowest index on
    ties) is never pruned, so a cell always keeps at least one candidate. Inactive
    candidates keep a streak of 0 and are never "pruned" again.

    Raises:
        ValueError: shapes disagree, no active candidate, ``threshold_fraction`` outside
            ``[0, 1)`` or ``patience < 1``.
    """
    if not 0.0 <= threshold_fraction < 1.0:
        raise ValueError(f"threshold_fraction must be in [0, 1), got {threshold_fraction}")
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    active = active.to(torch.bool)
    if weights.shape != active.shape or streak.shape != active.shape or weights.dim() != 1:
        raise ValueError(
            f"weights {tuple(weights.shape)}, active {tuple(active.shape)} and streak {tuple(streak.shape)} must be equal 1-D shapes"
        )
    n_active = int(active.sum())
    if n_active == 0:
        raise ValueError("no active candidate")
    threshold = threshold_fraction / n_active
    below = active & (weights.detach() < threshold)
    new_streak = torch.where(below, streak + 1, torch.zeros_like(streak))
    prune = new_streak >= patience
    prune[discretize_choice(weights, active)] = False
    new_streak = new_streak.masked_fill(prune, 0)
    return PruneDecision(streak=new_streak, prune=prune)


RELAXATIONS = ("softmax", "gumbel", "ste")


def gumbel_softmax(logits: torch.Tensor, mask: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """``softmax((logits + G) / τ)`` among active entries, ``G`` i.i.d. standard Gumbel noise.

    A sample of the Gumbel-softmax (concrete) relaxation: as ``τ → 0`` each row approaches a
    one-hot draw from ``softmax(logits)``, so annealing ``τ`` trains the cells on nearly
    discrete architectures while ``α`` still gets a gradient.

    Raises:
        ValueError: ``temperature <= 0`` or a row with no active entry.
    """
    if not temperature > 0:
        raise ValueError(f"the Gumbel temperature must be positive, got {temperature}")
    uniform = torch.rand_like(logits).clamp_(min=1e-10, max=1.0 - 1e-7)
    noise = -torch.log(-torch.log(uniform))
    return masked_softmax((logits + noise) / temperature, mask)


def straight_through(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One-hot argmax per row in the forward pass, ``softmax``'s gradient in the backward.

    ``hard + soft − soft.detach()``: the value is exactly the discrete architecture (so the
    relaxed and the discrete model coincide), while ``∂/∂α`` is that of the softmax weights.

    Raises:
        ValueError: a row with no active entry.
    """
    soft = masked_softmax(logits, mask)
    index = soft.detach().argmax(dim=-1, keepdim=True)  # argmax of softmax = argmax of active logits, lowest on ties
    hard = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return hard + soft - soft.detach()
