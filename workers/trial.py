"""The one entry point the dispatcher calls: :func:`run_trial` trains and evaluates one trial.

A trial: resolve the hyperparameters, seed everything, load and tokenise the tasks, build
the model, then per epoch train, evaluate every task on its dev split and ``report``
exactly once. A checkpoint is written (and its directory passed to ``report``) only when
the epoch beats the best ``avg_dev_score`` so far, so the latest checkpoint is always the
best. Training stops early after ``spec.train.patience`` epochs without improvement.

Environment knobs (read here, nowhere else):

- ``SEARCHSVC_NUM_THREADS``: ``torch.set_num_threads`` for this process (unset: torch's default);
- ``SEARCHSVC_DEVICE``: force a device (``cpu``, ``cuda``, ``cuda:1``); default CUDA when visible.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from searchsvc.spec import DEFAULT_HYPERPARAMETERS, HYPERPARAMETERS, StudySpec
from workers.batching import prepare_tokenizer
from workers.checkpoint import checkpoint_name, save_checkpoint
from workers.data import TaskData, load_spec_tasks
from workers.model import build_model
from workers.sampling import MultiTaskSampler, sampling_weights
from workers.trainer import TaskRef, build_optimizer, evaluate, linear_warmup_decay, train_epoch

Report = Callable[[dict[str, float], str | None], None]


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults filled in, integers made integers (searchers hand out 8.0), unknown keys refused.

    Raises:
        ValueError: an unknown key, or a value of the wrong kind.
    """
    unknown = sorted(set(config) - set(HYPERPARAMETERS))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown}; known: {', '.join(sorted(HYPERPARAMETERS))}")
    resolved = {**DEFAULT_HYPERPARAMETERS, **config}
    for name, value in resolved.items():
        kind = HYPERPARAMETERS[name]["kind"]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"hyperparameter {name} must be a number, got {value!r}")
        if kind == "int":
            if float(value) != round(float(value)):
                raise ValueError(f"hyperparameter {name} must be an integer, got {value!r}")
            resolved[name] = int(round(float(value)))
        else:
            resolved[name] = float(value)
    return resolved


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) so a trial is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_trial(
    config: dict[str, Any],
    *,
    spec: StudySpec,
    report: Report,
    workdir: str | Path,
) -> dict[str, float]:
    """Train and evaluate one trial; ``report(metrics, checkpoint_dir_or_None)`` once per epoch.

    ``metrics`` holds ``epoch`` (1-based), ``avg_dev_score`` (mean of the tasks' primary
    scores), ``train_loss``, ``<task>/score``, ``<task>/<metric>`` for each of the task's
    metrics, ``<task>/train_loss``, ``epoch_seconds``, ``trainable_params``, ``total_params``
    and ``lr`` (the learning rate at the end of the epoch). Returns the best epoch's metrics.

    Raises:
        ValueError: a bad config, task data or model (before any training starts).
    """
    params = resolve_config(config)
    train_spec = spec.train
    _apply_thread_setting()
    seed_everything(train_spec.seed)
    device = _pick_device()
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)

    tasks = load_spec_tasks(spec)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(spec.model))
    sizes = [len(t.train) for t in tasks]
    gammas = sampling_weights(
        train_spec.sampling,
        sizes,
        weights=[t.weight for t in spec.tasks],
        temperature=float(params["sampling_temperature"]),
    )
    sampler = MultiTaskSampler(sizes, batch_size=train_spec.batch_size, gammas=gammas, seed=train_spec.seed)
    total_steps = sampler.steps_per_epoch * train_spec.max_epochs
    infos = [t.info for t in tasks]
    model = build_model(
        spec.model, method=spec.method, config=params, tasks=infos, total_steps=total_steps, tokenizer=tokenizer
    ).to(device)
    max_len = train_spec.max_seq_len
    train_splits = [model.encode_split(tokenizer, i, t.train, max_seq_len=max_len) for i, t in enumerate(tasks)]
    dev_splits = [model.encode_split(tokenizer, i, t.dev, max_seq_len=max_len) for i, t in enumerate(tasks)]
    refs = [TaskRef(name=t.name, metrics=t.metrics) for t in tasks]
    optimizer = build_optimizer(
        model, lr=params["lr"], weight_decay=params["weight_decay"], head_lr_scale=params["head_lr_scale"]
    )
    scheduler = linear_warmup_decay(optimizer, total_steps=total_steps, warmup_ratio=params["warmup_ratio"])
    trainable, total = model.parameter_counts()
    pad_id = int(tokenizer.pad_token_id)

    best: dict[str, float] | None = None
    best_score = -math.inf
    stale = 0
    global_step = 0
    for epoch in range(1, train_spec.max_epochs + 1):
        started = time.perf_counter()
        stats = train_epoch(
            model,
            splits=train_splits,
            sampler=sampler,
            optimizer=optimizer,
            scheduler=scheduler,
            pad_id=pad_id,
            device=device,
            global_step=global_step,
            description=f"epoch {epoch}/{train_spec.max_epochs}",
        )
        global_step += stats.steps
        scores = evaluate(
            model, tasks=refs, splits=dev_splits, pad_id=pad_id, device=device, batch_size=2 * train_spec.batch_size
        )
        metrics = _epoch_metrics(epoch, tasks, scores, stats.loss, stats.task_losses)
        metrics.update(stats.diagnostics)
        metrics.update(
            epoch_seconds=time.perf_counter() - started,
            trainable_params=trainable,
            total_params=total,
            lr=float(scheduler.get_last_lr()[0]),
        )
        checkpoint: str | None = None
        if metrics["avg_dev_score"] > best_score:
            best_score, best, stale = metrics["avg_dev_score"], dict(metrics), 0
            info = {
                "epoch": epoch,
                "metrics": metrics,
                "method": spec.method,
                "model": spec.model,
                "family": model.family,
                "total_steps": total_steps,
                "max_seq_len": max_len,
                "tasks": [info.to_dict() for info in infos],
            }
            path = save_checkpoint(work / checkpoint_name(epoch), model=model, config=params, spec=spec, info=info)
            checkpoint = str(path)
        else:
            stale += 1
        report(metrics, checkpoint)
        if stale >= train_spec.patience:
            break
    assert best is not None  # max_epochs >= 1 and the first epoch always improves on -inf
    return best


def _epoch_metrics(
    epoch: int,
    tasks: list[TaskData],
    scores: Mapping[str, Mapping[str, float]],
    train_loss: float,
    task_losses: list[float],
) -> dict[str, float]:
    metrics: dict[str, float] = {"epoch": epoch, "train_loss": train_loss}
    primaries = []
    for task, task_loss in zip(tasks, task_losses, strict=True):
        task_scores = scores[task.name]
        primary = task_scores[task.primary_metric]
        primaries.append(primary)
        metrics[f"{task.name}/score"] = primary
        metrics[f"{task.name}/train_loss"] = task_loss
        for name, value in task_scores.items():
            metrics[f"{task.name}/{name}"] = value
    metrics["avg_dev_score"] = float(np.mean(primaries))
    return metrics


def _apply_thread_setting() -> None:
    raw = os.environ.get("SEARCHSVC_NUM_THREADS")
    if raw:
        try:
            threads = int(raw)
        except ValueError:
            raise ValueError(f"SEARCHSVC_NUM_THREADS must be a positive integer, got {raw!r}") from None
        if threads < 1:
            raise ValueError(f"SEARCHSVC_NUM_THREADS must be a positive integer, got {raw!r}")
        torch.set_num_threads(threads)


def _pick_device() -> torch.device:
    forced = os.environ.get("SEARCHSVC_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
