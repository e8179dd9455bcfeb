"""The training loop's parts: optimizer, schedule, one epoch of multi-task steps, evaluation.

Kept free of reporting and checkpoint policy (that is :mod:`workers.trial`) and of the
model's kind: the loop talks to a :class:`workers.multitask.MultiTaskBase` only, so an
encoder with heads and a text-to-text LM train through the same code.

A step is::

    batch  = model.collate(parts, pad_id=pad_id)
    losses = model.task_losses(batch)           # one scalar per task, in task order
    extra  = model.regularization()             # Tensor or None
    backward_fn(losses, extra)                  # fills .grad (default: mean + extra, backward)
    clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step(); scheduler.step()
    model.after_optimizer_step(global_step)     # AdaLoRA's budget
    step_hook(step=..., model=..., batch=..., losses=..., optimizer=...)   # optional
    optimizer.zero_grad()

``backward_fn`` is where gradient coordination plugs in (per-task gradients, projection,
dynamic task weights); ``step_hook`` is where architecture updates plug in.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from workers.metrics import score_task
from workers.multitask import MultiTaskBase
from workers.sampling import MultiTaskSampler

MAX_GRAD_NORM = 1.0

BackwardFn = Callable[[list[torch.Tensor], "torch.Tensor | None"], "Mapping[str, float] | None"]
"""``backward_fn(losses, extra)``: turn the step's task losses (+ the method's extra term) into gradients.

It must leave the gradients of the trainable parameters in ``.grad`` (the loop then clips
and steps). It may return diagnostics ``{name: value}`` (e.g. a gradient conflict score);
the loop averages each over the steps that returned it (:attr:`EpochStats.diagnostics`).
"""

StepHook = Callable[..., None]
"""``step_hook(*, step, model, batch, losses, optimizer, **info)``, after ``optimizer.step()``.

``step`` is the global index of the step just taken (0-based), ``losses`` the task losses
as floats. It runs after the scheduler and AdaLoRA's update and *before* ``zero_grad()``,
so it sees this step's gradients; whatever it accumulates into the model's ``.grad`` is
cleared right after. It should accept ``**info``: fields may be added.
"""


@dataclass(frozen=True)
class TaskRef:
    """What the loop needs to know of a task: its name (as the model knows it) and metrics."""

    name: str
    metrics: tuple[str, ...]


def default_backward(losses: list[torch.Tensor], extra: torch.Tensor | None) -> None:
    """``(mean of the task losses + extra).backward()``: every task weighted equally."""
    objective = torch.stack(losses).mean()
    if extra is not None:
        objective = objective + extra
    objective.backward()


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    head_lr_scale: float,
    skip: Collection[int] = (),
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; heads (if any) at ``lr · head_lr_scale``.

    ``skip``: ids of parameters another optimizer owns (PEML's architecture α).

    Biases and other 1-D parameters (LayerNorm) get no weight decay, as usual for
    transformers: decaying them pulls the model's offsets towards zero for no gain.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in skip:
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


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
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
    """Mean training losses of one epoch (overall and per task), and mean diagnostics of ``backward_fn``."""

    loss: float
    task_losses: list[float]
    steps: int
    diagnostics: dict[str, float] = field(default_factory=dict)


def train_epoch(
    model: MultiTaskBase,
    *,
    splits: Sequence[Any],
    sampler: MultiTaskSampler,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    pad_id: int,
    device: torch.device,
    global_step: int,
    backward_fn: BackwardFn | None = None,
    step_hook: StepHook | None = None,
    balance_fn: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
    max_grad_norm: float | None = MAX_GRAD_NORM,
    description: str = "train",
) -> EpochStats:
    """One epoch of multi-task steps (see the module docstring for the step).

    ``splits[i]`` is task i's split as the model encoded it (``model.encode_split``), in the
    model's task order. ``global_step`` is the number of steps done before this epoch.
    ``backward_fn`` defaults to :func:`default_backward`; ``max_grad_norm=None`` skips clipping.
    ``balance_fn`` re-weights the task losses before ``backward_fn`` sees them
    (:class:`workers.balance.LossBalancer`). The reported loss is the plain mean of the
    task losses, whatever ``balance_fn`` or ``backward_fn`` weight.
    """
    backward = backward_fn or default_backward
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    total = 0.0
    per_task = np.zeros(len(splits))
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    steps = 0
    bar = tqdm(sampler.epoch(), total=sampler.steps_per_epoch, desc=description, leave=False, disable=None)
    for rows in bar:
        parts = [(i, split, picked) for i, (split, picked) in enumerate(zip(splits, rows, strict=True))]
        batch = model.collate(parts, pad_id=pad_id).to(device)
        losses = model.task_losses(batch)
        extra = model.regularization()
        diagnostics = backward(balance_fn(losses) if balance_fn is not None else losses, extra)
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
        optimizer.step()
        scheduler.step()
        model.after_optimizer_step(global_step + steps)
        values = [float(x.detach()) for x in losses]
        if step_hook is not None:
            step_hook(step=global_step + steps, model=model, batch=batch, losses=values, optimizer=optimizer)
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        total += float(np.mean(values))
        per_task += np.array(values)
        for name, value in (diagnostics or {}).items():
            sums[name] = sums.get(name, 0.0) + float(value)
            counts[name] = counts.get(name, 0) + 1
        bar.set_postfix(loss=f"{total / steps:.4f}", refresh=False)
    bar.close()
    steps = max(steps, 1)
    return EpochStats(
        loss=total / steps,
        task_losses=list(per_task / steps),
        steps=steps,
        diagnostics={name: sums[name] / counts[name] for name in sums},
    )


@torch.no_grad()
def evaluate(
    model: MultiTaskBase,
    *,
    tasks: Sequence[TaskRef],
    splits: Sequence[Any],
    pad_id: int,
    device: torch.device,
    batch_size: int,
) -> dict[str, dict[str, float]]:
    """Every task's metrics on its whole (possibly capped) dev split: ``{task: {metric: value}}``.

    ``splits[i]`` belongs to ``tasks[i]``; the model finds the task by name.
    """
    model.eval()
    scores: dict[str, dict[str, float]] = {}
    for task, split in zip(tasks, splits, strict=True):
        index = model.task_names.index(task.name)
        predictions = model.predict_split(index, split, batch_size=batch_size, pad_id=pad_id, device=device)
        scores[task.name] = score_task(task.metrics, predictions, np.asarray(split.labels, dtype=np.float64))
    return scores
