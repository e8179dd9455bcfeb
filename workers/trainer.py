"""The training loop's parts: optimizer, schedule, one epoch of multi-task steps, evaluation.

Kept free of reporting and checkpoint policy (that is :mod:`workers.trial`), so the PEML
trainer can reuse the optimizer, the schedule and the evaluation while replacing the step
(per-task gradients, projection, architecture updates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from workers.batching import EncodedSplit, collate, eval_batches
from workers.metrics import score_task
from workers.model import MultiTaskModel
from workers.sampling import MultiTaskSampler

MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class TaskRef:
    """What the loop needs to know of a task: its name (= its head's key) and metrics."""

    name: str
    metrics: tuple[str, ...]


def build_optimizer(
    model: MultiTaskModel,
    *,
    lr: float,
    weight_decay: float,
    head_lr_scale: float,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; heads at ``lr · head_lr_scale``.

    Biases and other 1-D parameters (LayerNorm) get no weight decay, as usual for
    transformers: decaying them pulls the model's offsets towards zero for no gain.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("heads."), p.ndim >= 2)
        groups.setdefault(key, []).append(p)
    param_groups = [
        {
            "params": params,
            "lr": lr * (head_lr_scale if is_head else 1.0),
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (is_head, decays), params in sorted(groups.items())
    ]
    if not param_groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(param_groups)


def linear_warmup_decay(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_ratio`` of the steps, then linear decay to zero."""
    warmup = int(math.ceil(warmup_ratio * total_steps))
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class EpochStats:
    """Mean training losses of one epoch: overall and per task."""

    loss: float
    task_losses: list[float]
    steps: int


def train_epoch(
    model: MultiTaskModel,
    *,
    tasks: Sequence[TaskRef],
    splits: Sequence[EncodedSplit],
    sampler: MultiTaskSampler,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    pad_id: int,
    device: torch.device,
    global_step: int,
    description: str = "train",
) -> EpochStats:
    """One epoch of steps; each step's loss is the mean of the tasks' mean losses.

    ``global_step`` is the number of steps done before this epoch (AdaLoRA's clock).
    """
    model.train()
    total = 0.0
    per_task = np.zeros(len(splits))
    steps = 0
    bar = tqdm(sampler.epoch(), total=sampler.steps_per_epoch, desc=description, leave=False, disable=None)
    for rows in bar:
        parts = [(i, split, picked) for i, (split, picked) in enumerate(zip(splits, rows, strict=True))]
        batch = collate(parts, pad_id=pad_id).to(device)
        pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        losses = []
        for task, start, end in batch.segments:
            head = model.head(tasks[task].name)
            losses.append(head.loss(head(pooled[start:end]), batch.labels[start:end]))
        loss = torch.stack(losses).mean()
        extra = model.regularization()
        objective = loss if extra is None else loss + extra
        objective.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        model.adalora_step(global_step + steps)
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        total += float(loss.detach())
        per_task += np.array([float(x.detach()) for x in losses])
        bar.set_postfix(loss=f"{total / steps:.4f}", refresh=False)
    bar.close()
    steps = max(steps, 1)
    return EpochStats(loss=total / steps, task_losses=list(per_task / steps), steps=steps)


@torch.no_grad()
def evaluate(
    model: MultiTaskModel,
    *,
    tasks: Sequence[TaskRef],
    splits: Sequence[EncodedSplit],
    pad_id: int,
    device: torch.device,
    batch_size: int,
) -> dict[str, dict[str, float]]:
    """Every task's metrics on its whole (possibly capped) dev split: ``{task: {metric: value}}``."""
    model.eval()
    scores: dict[str, dict[str, float]] = {}
    for index, (task, split) in enumerate(zip(tasks, splits, strict=True)):
        head = model.head(task.name)
        predictions = np.zeros(len(split), dtype=np.float64)
        for rows, batch in eval_batches(split, task=index, batch_size=batch_size, pad_id=pad_id):
            batch = batch.to(device)
            pooled = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids)
            predictions[rows] = head.predict(head(pooled)).float().cpu().numpy()
        scores[task.name] = score_task(task.metrics, predictions, np.asarray(split.labels, dtype=np.float64))
    return scores

