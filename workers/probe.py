"""Linear probing before fine-tuning (LP-FT): fit the task heads on the starting model's features first.

A fresh classification head is a random linear map. Trained jointly from the first step,
its large, arbitrary gradients flow into the shared adapter and bend the pretrained
features towards whatever fits a random head; the head and the features then co-adapt
from there. Kumar et al. (ICLR 2022, "Fine-Tuning can Distort Pretrained Features")
show that fitting the head first on the frozen features and fine-tuning after ("LP-FT")
keeps more of what the pretrained model knew. In a multi-task adapter this matters
twice: the distortion one task's random head causes is paid by every other task (a
bi-encoder's similarity space, which STS-B reads as plain cosines, is the first victim).

:func:`probe_heads` computes each training row's pooled features once, with the model as
it starts (LoRA's B is zero, so that is the frozen encoder, plus any initial prefix), in
evaluation mode and without gradients, then trains only the heads on those features for
``epochs`` passes. The encoder pass costs about a third of one training epoch; the head
passes are negligible. Nothing else moves: the adapter, the prefix and the optimizer
state of the main training are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from workers.batching import EncodedSplit
from workers.encoder import MultiTaskModel

FEATURE_CHUNK = 64  # rows per encoder pass while caching features


@dataclass(frozen=True)
class ProbeResult:
    """Per task: the head's training loss before and after probing (``nan`` for a task with no rows)."""

    loss_before: list[float]
    loss_after: list[float]


@torch.no_grad()
def cached_features(
    model: MultiTaskModel, task_index: int, split: EncodedSplit, *, pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(first-text features, second-text features or None, labels)`` of every row of one split."""
    firsts: list[torch.Tensor] = []
    seconds: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for start in range(0, len(split), FEATURE_CHUNK):
        rows = np.arange(start, min(start + FEATURE_CHUNK, len(split)))
        batch = model.collate([(task_index, split, rows)], pad_id=pad_id).to(device)
        pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        n = batch.num_rows
        firsts.append(pooled[:n])
        if batch.pair_rows is not None and model.head(model.task_names[task_index]).pair:
            seconds.append(pooled[batch.pair_rows[:n]])
        labels.append(batch.labels)
    second = torch.cat(seconds) if seconds else None
    return torch.cat(firsts), second, torch.cat(labels)


def probe_heads(
    model: MultiTaskModel,
    splits: Sequence[EncodedSplit],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    seed: int = 0,
) -> ProbeResult:
    """Train each task's head alone on the starting model's cached features (module docstring).

    Each head gets its own Adam at ``lr``; rows are shuffled per epoch (seeded). The model
    is left in the training mode it came in.
    """
    was_training = model.training
    model.eval()
    features = [cached_features(model, i, split, pad_id=pad_id, device=device) for i, split in enumerate(splits)]
    model.train(was_training)
    generator = torch.Generator().manual_seed(seed)
    before: list[float] = []
    after: list[float] = []
    for name, (first, second, labels) in zip(model.task_names, features, strict=True):
        head = model.head(name)
        if len(labels) == 0:
            before.append(float("nan"))
            after.append(float("nan"))
            continue
        before.append(_full_loss(head, first, second, labels))
        optimizer = torch.optim.Adam(head.parameters(), lr=lr)
        head.train()
        for _ in range(epochs):
            order = torch.randperm(len(labels), generator=generator).to(labels.device)
            for start in range(0, len(labels), batch_size):
                rows = order[start:start + batch_size]
                outputs = head(first[rows], None if second is None else second[rows])
                loss = head.loss(outputs, labels[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        after.append(_full_loss(head, first, second, labels))
    model.train(was_training)
    return ProbeResult(loss_before=before, loss_after=after)


@torch.no_grad()
def _full_loss(head: torch.nn.Module, first: torch.Tensor, second: torch.Tensor | None, labels: torch.Tensor) -> float:
    was_training = head.training
    head.eval()
    loss = float(head.loss(head(first, second), labels))
    head.train(was_training)
    return loss
