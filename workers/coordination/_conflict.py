"""Conflicts between task gradients: how strong they are, and removing them by projection.

All functions take *flat* 1-D gradients, one per task, of the same length (the shared
parameters' gradients concatenated). They never modify their inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check_flat(grads: Sequence[Tensor]) -> None:
    """Refuse gradients that are not 1-D vectors of one common length."""
    for index, g in enumerate(grads):
        if g.ndim != 1:
            raise ValueError(f"gradient {index} must be flat (1-D), got shape {tuple(g.shape)}")
    lengths = {g.numel() for g in grads}
    if len(lengths) > 1:
        raise ValueError(f"task gradients differ in length: {sorted(lengths)}")


def _check_order(order: Sequence[int], n: int) -> list[int]:
    """An order must name every task exactly once, so no task is skipped or used twice."""
    picked = [int(j) for j in order]
    if sorted(picked) != list(range(n)):
        raise ValueError(f"order must be a permutation of 0..{n - 1}, got {list(order)}")
    return picked


def project_conflicts(grads: Sequence[Tensor], *, order: Sequence[int] | None = None) -> list[Tensor]:
    """PCGrad: strip from each task gradient its components that oppose the other tasks.

    For each task ``i`` and every other task ``j`` (in ``order``, skipping ``i``; default
    the natural order), if ``g_i · g_j < 0`` then ``g_i ← g_i − (g_i·g_j / ‖g_j‖²) g_j``.
    ``g_i`` accumulates its projections, but ``g_j`` is always the *original* gradient of
    ``j``: projecting onto already-projected vectors would make the result depend on
    which task was processed first far more than PCGrad intends.

    Why: a step along the plain sum of conflicting gradients helps one task by hurting
    another; after projection, each ``g_i`` no longer points against the ``g_j`` it was
    projected on, so the combined step stops trading one task for another.

    Zero-norm gradients (a task absent from the batch, or not touching the shared
    parameters) are skipped as ``j``: there is no direction to project onto.

    Args:
        grads: one flat gradient per task, all the same length.
        order: a permutation of the task indices; the order in which each ``g_i`` is
            projected on the others (PCGrad shuffles it per step to avoid a fixed bias).

    Returns:
        New tensors, one per task; the inputs are left untouched.
    """
    _check_flat(grads)
    n = len(grads)
    sequence = list(range(n)) if order is None else _check_order(order, n)
    # Branch-free: the coefficient is 0 when the pair does not conflict (and when g_j is
    # zero, since then g_i·g_j = 0), so no value leaves the device mid-loop.
    squared_norms = [torch.dot(g, g).clamp_min(torch.finfo(g.dtype).tiny) for g in grads]
    projected: list[Tensor] = []
    for i, original in enumerate(grads):
        g = original.clone()
        for j in sequence:
            if j != i:
                coefficient = torch.dot(g, grads[j]).clamp(max=0) / squared_norms[j]
                g = g - coefficient * grads[j]
        projected.append(g)
    return projected


def _gram(grads: Sequence[Tensor]) -> Tensor:
    """All pairwise dot products at once, in float64 so that tiny cosines stay accurate."""
    stacked = torch.stack([g.detach().to(torch.float64) for g in grads])
    return stacked @ stacked.T


def conflict_score(grads: Sequence[Tensor]) -> float:
    """Mean over task pairs ``i < j`` of ``−cos(g_i, g_j)``: how much the tasks pull apart.

    ``+1`` means every pair points in opposite directions, ``0`` orthogonal (or no pairs:
    fewer than two tasks), ``−1`` fully aligned. A pair with a zero gradient counts as 0:
    a task that does not move the shared parameters neither helps nor hurts the others.
    Reported per epoch, it shows whether coordinating gradients is worth its cost.
    """
    _check_flat(grads)
    n = len(grads)
    if n < 2:
        return 0.0
    gram = _gram(grads)
    norms = gram.diagonal().clamp_min(0).sqrt()
    denominators = torch.outer(norms, norms)
    cosines = torch.where(denominators > 0, gram / denominators.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    pairs = torch.triu_indices(n, n, offset=1)
    return float(-cosines[pairs[0], pairs[1]].mean())


def conflict_fraction(grads: Sequence[Tensor]) -> float:
    """Share of task pairs ``i < j`` whose gradients conflict (``g_i · g_j < 0``).

    Complements :func:`conflict_score`: a mean cosine near 0 can hide a few strongly
    opposed pairs among many aligned ones; the fraction says how often projection acts.
    Returns 0 with fewer than two tasks.
    """
    _check_flat(grads)
    n = len(grads)
    if n < 2:
        return 0.0
    gram = _gram(grads)
    pairs = torch.triu_indices(n, n, offset=1)
    conflicting = int((gram[pairs[0], pairs[1]] < 0).sum())
    return conflicting / pairs.shape[1]
