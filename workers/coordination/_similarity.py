"""Task-similarity regularization: pull together the representations of similar tasks.

``S_ij`` is the cosine similarity of tasks ``i`` and ``j``'s instruction embeddings; the
penalty ``Σ_{i<j} S_ij ‖h_i − h_j‖²`` (``h_i``: task i's mean representation) is added
to the training objective (as the coordinator's ``extra`` term, scaled by the spec's
``similarity_weight``) so that tasks described alike share more of their features.
"""

from __future__ import annotations

import torch
from torch import Tensor


def task_similarity(embeddings: Tensor) -> Tensor:
    """Cosine similarity ``S[T, T]`` of the tasks' instruction embeddings ``[T, d]``.

    The diagonal is 1. A task without an instruction is a row of NaN (or all zeros: no
    direction, so no cosine); its similarities to the other tasks are NaN, which
    :func:`similarity_penalty` reads as "this pair does not take part".
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [tasks, dim], got shape {tuple(embeddings.shape)}")
    x = embeddings.detach().to(torch.float64)
    norms = torch.linalg.vector_norm(x, dim=1)
    present = torch.isfinite(x).all(dim=1) & (norms > 0)
    unit = torch.where(present[:, None], x / norms.clamp_min(torch.finfo(torch.float64).tiny)[:, None], 0.0)
    similarity = (unit @ unit.T).clamp(-1.0, 1.0)
    both = present[:, None] & present[None, :]
    similarity = torch.where(both, similarity, torch.nan)
    similarity.fill_diagonal_(1.0)
    return similarity.to(embeddings.dtype if embeddings.is_floating_point() else torch.float32)


def similarity_penalty(task_means: Tensor, similarity: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """``Σ_{i<j} S_ij · ‖h_i − h_j‖²``, differentiable in ``task_means``.

    Only pairs with an instruction on both sides take part: a pair is left out when
    ``S_ij`` is NaN (see :func:`task_similarity`) or when either task is ``False`` in
    ``mask`` (e.g. a task absent from this batch, whose mean does not exist). A task
    with no finite similarity to any other (a NaN row) is left out entirely, and rows of
    ``task_means`` for left-out tasks are never read, so they may hold NaN.

    The sign of ``S`` is kept as is: a pair with a *negative* similarity lowers the
    penalty by moving apart, so the regularizer pushes dissimilar tasks apart. That term
    is unbounded below; keep ``similarity_weight`` small, or clamp ``S`` at 0 before
    calling, if only attraction is wanted.

    Args:
        task_means: ``[T, d]`` mean representation of each task (e.g. pooled encoder
            output averaged over the task's rows in the batch).
        similarity: ``[T, T]`` similarity matrix, NaN for pairs that do not take part.
        mask: optional ``[T]`` booleans, True for tasks that take part.

    Returns:
        A scalar tensor (0 when no pair takes part, still attached to ``task_means``).
    """
    n = task_means.shape[0] if task_means.ndim == 2 else -1
    if n < 0 or similarity.shape != (n, n):
        shapes = f"{tuple(task_means.shape)} and {tuple(similarity.shape)}"
        raise ValueError(f"need task_means [T, d] and similarity [T, T]; got {shapes}")
    take = torch.ones(n, dtype=torch.bool, device=task_means.device) if mask is None else mask.to(task_means.device, torch.bool)
    if take.shape != (n,):
        raise ValueError(f"mask must have shape ({n},), got {tuple(take.shape)}")
    # A task takes part only if it has a similarity to some other task: a NaN row (no
    # instruction) is dropped before its mean is read, so NaN never reaches the gradient.
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=similarity.device)
    known = (~similarity.isnan() & off_diagonal).any(dim=1).to(task_means.device)
    index = (take & known).nonzero().flatten()
    means = task_means.index_select(0, index)
    weights = similarity.to(task_means.device, task_means.dtype).index_select(0, index).index_select(1, index)
    upper = torch.ones_like(weights, dtype=torch.bool).triu(diagonal=1)
    weights = torch.where(upper & ~weights.isnan(), weights, 0.0)
    differences = means[:, None, :] - means[None, :, :]
    squared = (differences * differences).sum(dim=-1)
    return (weights * squared).sum()
