"""Log-probabilities of target tokens, and predictions from scoring every label text.

Evaluation never generates: for each row it scores the text of every label (the sum of
its tokens' log-probabilities, EOS included) in one batched pass, then takes the argmax
(classification) or the probability-weighted mean of the bin values (regression, with
the probabilities renormalised over the bins).
"""

from __future__ import annotations

import torch

from workers.text2text.encode import IGNORE_INDEX
from workers.text2text.verbalize import Verbalizer


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, *, shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(label token), mask)``, both ``[rows, positions]``; 0 where ``labels`` is -100.

    ``shift=True`` for causal models (the logits at position t predict token t + 1). Only
    the selected positions go through the softmax, so a long prompt costs no memory here.
    """
    if shift:
        logits = logits[:, :-1]
        labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    picked = logits[mask].float().log_softmax(dim=-1)
    values = picked.gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1)
    out = torch.zeros(labels.shape, dtype=values.dtype, device=values.device)
    return out.masked_scatter(mask, values), mask


def segment_losses(logprobs: torch.Tensor, mask: torch.Tensor, segments: tuple[tuple[int, int, int], ...]) -> list[torch.Tensor]:
    """One loss per segment: the mean negative log-probability over its target tokens."""
    losses = []
    for _, start, end in segments:
        count = mask[start:end].sum().clamp(min=1)
        losses.append(-logprobs[start:end].sum() / count)
    return losses


def decode_scores(verbalizer: Verbalizer, scores: torch.Tensor) -> torch.Tensor:
    """Predictions ``[rows]`` from per-text log-probabilities ``[rows, texts]``.

    Classification: the index of the best text (class index); regression:
    ``Σ_i softmax(scores)_i · value_i``, a float within the label range.
    """
    if scores.shape[-1] != len(verbalizer.texts):
        raise ValueError(f"{scores.shape[-1]} scores per row for {len(verbalizer.texts)} label texts")
    if verbalizer.kind == "classification":
        return scores.argmax(dim=-1)
    values = torch.tensor(verbalizer.values, dtype=torch.float32, device=scores.device)
    return scores.float().softmax(dim=-1) @ values
