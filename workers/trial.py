"""The one entry point the dispatcher calls: :func:`run_trial` trains and evaluates one trial.

A trial: resolve the hyperparameters, seed everything, load and tokenise the tasks, build
the model (LoRA, prefix, heads; PEML's searched prefix), then per epoch train, evaluate
every task on its dev split and ``report`` exactly once, with the epoch's checkpoint.
Every epoch is checkpointed with its full training state, so a trial interrupted
anywhere continues from its last epoch (``resume_from``); ``is_best`` says whether the
epoch is the best so far, and only the best and the latest are kept on disk. Training
stops early after ``spec.train.patience`` epochs without improvement.

PEML (``method: peml``): the reported scores are the *discrete* model's (each cell its
argmax operation: what the exported adapter is); the relaxed model's score and the
difference (the discretization gap) are reported beside them.

Environment knobs (read here, nowhere else):

- ``SEARCHSVC_NUM_THREADS``: ``torch.set_num_threads`` for this process (unset: torch's default);
- ``SEARCHSVC_DEVICE``: force a device (``cpu``, ``cuda``, ``cuda:1``); default CUDA when visible.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from searchsvc.spec import DEFAULT_HYPERPARAMETERS, TASK_WEIGHT_PREFIX, StudySpec, hyperparameter_rule
from workers.batching import prepare_tokenizer
from workers.checkpoint import checkpoint_name, load_training_state, load_weights, save_checkpoint
from workers.data import TaskData, load_spec_tasks
from workers.model import build_model
from workers.multitask import MultiTaskBase
from workers.peml import PemlTraining, discretization_metrics, searched_prefix, split_held_out
from workers.sampling import MultiTaskSampler, sampling_weights
from workers.step import StepBackward, instruction_similarity
from workers.trainer import TaskRef, build_optimizer, evaluate, linear_warmup_decay, train_epoch

Report = Callable[[dict[str, Any], str | None], None]
PARAMETER_BUDGET = 0.10  # PEML's added parameters, as a share of the base model
BUDGET_MIN_BASE = 10_000_000  # tiny test models are exempt: their embeddings alone are smaller than any prefix


def resolve_config(config: Mapping[str, Any], task_names: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults filled in, integers made integers (searchers hand out 8.0), unknown keys refused.

    ``weight_<task>`` (a task's sampling weight) is known for the given ``task_names``.

    Raises:
        ValueError: an unknown key, or a value of the wrong kind.
    """
    resolved = {**DEFAULT_HYPERPARAMETERS, **config}
    unknown = sorted(name for name in resolved if hyperparameter_rule(name, task_names) is None)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown}; known: {', '.join(sorted(DEFAULT_HYPERPARAMETERS))}, "
                         f"{TASK_WEIGHT_PREFIX}<task>")
    for name, value in resolved.items():
        rule = hyperparameter_rule(name, task_names)
        assert rule is not None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"hyperparameter {name} must be a number, got {value!r}")
        if rule["kind"] == "int":
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
    resume_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one trial; ``report(metrics, checkpoint_dir)`` once per epoch.

    ``metrics`` holds ``epoch`` (1-based), ``avg_dev_score`` (mean of the tasks' primary
    scores), ``train_loss``, ``<task>/score``, ``<task>/<metric>`` for each of the task's
    metrics, ``<task>/train_loss``, ``epoch_seconds``, ``trainable_params``, ``total_params``,
    ``added_param_ratio``, ``lr``, ``is_best``, ``grad_conflict`` (sampled), and with
    coordination ``grad_conflict_after`` and ``task_weight/<task>``; PEML adds ``nas/...``
    (per-cell α distribution, entropy, pruned and chosen operations) and the
    discretization gap. ``resume_from``: a checkpoint of this trial to continue from.
    Returns the best epoch's metrics.

    Raises:
        ValueError: a bad config, task data or model (before any training starts).
    """
    tasks = load_spec_tasks(spec)
    names = [t.name for t in tasks]
    params = resolve_config(config, names)
    train_spec = spec.train
    _apply_thread_setting()
    seed_everything(train_spec.seed)
    device = _pick_device()
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(spec.model))
    bilevel = spec.method == "peml" and spec.peml.schedule == "bilevel"
    rows = [split_held_out(len(t.train)) if bilevel else (list(range(len(t.train))), []) for t in tasks]
    weights = [float(params.get(f"{TASK_WEIGHT_PREFIX}{t.name}", t.weight)) for t in spec.tasks]
    gammas = sampling_weights(train_spec.sampling, [len(r[0]) for r in rows], weights=weights,
                              temperature=float(params["sampling_temperature"]))
    sampler = MultiTaskSampler([len(r[0]) for r in rows], batch_size=train_spec.batch_size, gammas=gammas, seed=train_spec.seed)
    total_steps = sampler.steps_per_epoch * train_spec.max_epochs
    infos = [t.info for t in tasks]
    model = build_model(spec.model, method=spec.method, config=params, tasks=infos, total_steps=total_steps,
                        tokenizer=tokenizer, peml=spec.peml).to(device)
    model.remember_trainable()
    max_len = train_spec.max_seq_len
    train_splits = [model.encode_split(tokenizer, i, [t.train[j] for j in rows[i][0]], max_seq_len=max_len) for i, t in enumerate(tasks)]
    dev_splits = [model.encode_split(tokenizer, i, t.dev, max_seq_len=max_len) for i, t in enumerate(tasks)]
    refs = [TaskRef(name=t.name, metrics=t.metrics) for t in tasks]
    pad_id = int(tokenizer.pad_token_id)

    peml = None
    if searched_prefix(model) is not None:
        held_out = held_sampler = None
        if bilevel:
            held_out = [model.encode_split(tokenizer, i, [t.train[j] for j in rows[i][1]], max_seq_len=max_len) for i, t in enumerate(tasks)]
            held_sampler = MultiTaskSampler([len(r[1]) for r in rows], batch_size=train_spec.batch_size, gammas=gammas,
                                            seed=train_spec.seed + 1)
        peml = PemlTraining(model, spec.peml, arch_lr=float(params["arch_lr"]), max_epochs=train_spec.max_epochs,
                            held_out=held_out, held_out_sampler=held_sampler, pad_id=pad_id, device=device,
                            entropy_lambda=float(params["entropy_lambda"]))
    arch = set(map(id, peml.prefix.arch_parameters())) if peml else set()
    optimizer = build_optimizer(model, lr=params["lr"], weight_decay=params["weight_decay"], head_lr_scale=params["head_lr_scale"],
                                skip=arch)
    scheduler = linear_warmup_decay(optimizer, total_steps=total_steps, warmup_ratio=params["warmup_ratio"])
    similarity = None
    if spec.coordination.similarity_weight > 0:
        similarity = instruction_similarity(model, tokenizer, [t.instruction for t in spec.tasks], device=device)
    backward = StepBackward(model, task_names=names, coordination=spec.coordination, grad_alpha=float(params["grad_alpha"]),
                            entropy_lambda=float(params["entropy_lambda"]) if peml else 0.0, similarity=similarity)
    trainable, total = model.parameter_counts()
    base_params = total - trainable
    if spec.method == "peml" and base_params >= BUDGET_MIN_BASE and trainable > PARAMETER_BUDGET * base_params:
        raise ValueError(f"peml adds {trainable:,} trainable parameters, {trainable / base_params:.1%} of the base model's "
                         f"{base_params:,} (limit {PARAMETER_BUDGET:.0%}): lower prefix_length, nas_cells, lora_rank or peml.width")

    state = {"epoch": 0, "global_step": 0, "best_score": -math.inf, "best": None, "stale": 0}
    resumed_from = None
    if resume_from is not None:
        resumed_from = _restore(Path(resume_from), model, optimizer, scheduler, peml, backward, state)
        sampler = state.pop("sampler", sampler)
    kept: list[Path] = []
    for epoch in range(int(state["epoch"]) + 1, train_spec.max_epochs + 1):
        if int(state["stale"]) >= train_spec.patience:
            break  # a resumed trial that had already stopped early
        started = time.perf_counter()
        if peml is not None:
            peml.begin_epoch(epoch)
        stats = train_epoch(
            model, splits=train_splits, sampler=sampler, optimizer=optimizer, scheduler=scheduler, pad_id=pad_id,
            device=device, global_step=int(state["global_step"]), backward_fn=backward,
            step_hook=peml.step_hook if peml is not None else None, description=f"epoch {epoch}/{train_spec.max_epochs}",
        )
        train_seconds = time.perf_counter() - started
        state["global_step"] = int(state["global_step"]) + stats.steps
        evaluate_now = lambda: evaluate(model, tasks=refs, splits=dev_splits, pad_id=pad_id, device=device,  # noqa: E731
                                        batch_size=2 * train_spec.batch_size)
        scores = evaluate_now()
        extra: dict[str, Any] = {}
        if peml is not None:
            relaxed = _epoch_metrics(epoch, tasks, scores, stats.loss, stats.task_losses)
            with peml.prefix.discretized():
                scores = evaluate_now()
            extra.update({f"{t.name}/relaxed_score": relaxed[f"{t.name}/score"] for t in tasks})
            extra.update(discretization_metrics(relaxed, _epoch_metrics(epoch, tasks, scores, stats.loss, stats.task_losses)))
            extra.update(peml.report(peml.prune()))
        metrics: dict[str, Any] = _epoch_metrics(epoch, tasks, scores, stats.loss, stats.task_losses)
        metrics.update(stats.diagnostics)
        metrics.update(extra)
        metrics.update(epoch_seconds=time.perf_counter() - started, train_seconds=train_seconds, train_steps=stats.steps,
                       seconds_per_step=train_seconds / max(1, stats.steps), trainable_params=trainable, total_params=total,
                       added_param_ratio=trainable / max(1, base_params), lr=float(scheduler.get_last_lr()[0]))
        if resumed_from is not None:
            metrics["resumed_from_epoch"], resumed_from = resumed_from, None
        is_best = metrics["avg_dev_score"] > float(state["best_score"])
        metrics["is_best"] = float(is_best)
        if is_best:
            state.update(best_score=metrics["avg_dev_score"], best=dict(metrics), stale=0)
        else:
            state["stale"] = int(state["stale"]) + 1
        state["epoch"] = epoch
        path = _save(work, epoch, model, params, spec, infos, metrics, total_steps, optimizer, scheduler, peml, backward,
                     sampler, state)
        report(metrics, str(path))
        kept = _prune_local_checkpoints(kept + [path], best_epoch=int(state["best"]["epoch"]))
        if int(state["stale"]) >= train_spec.patience:
            break
    assert state["best"] is not None  # a first epoch always improves on -inf; a checkpoint has one
    return dict(state["best"])


def _save(work: Path, epoch: int, model: MultiTaskBase, params: dict[str, Any], spec: StudySpec, infos: list[Any],
          metrics: dict[str, Any], total_steps: int, optimizer: torch.optim.Optimizer, scheduler: Any,
          peml: PemlTraining | None, backward: StepBackward, sampler: MultiTaskSampler, state: dict[str, Any]) -> Path:
    info = {
        "epoch": epoch, "metrics": metrics, "method": spec.method, "model": spec.model, "family": model.family,
        "total_steps": total_steps, "max_seq_len": spec.train.max_seq_len, "tasks": [i.to_dict() for i in infos],
    }
    training_state = {
        **{k: state[k] for k in ("epoch", "global_step", "best_score", "best", "stale")},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "sampler": sampler,
        "peml": peml.state_dict() if peml is not None else None, "coordination": backward.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    target = work / checkpoint_name(epoch)
    if target.exists():  # a resumed trial re-running an epoch whose checkpoint it already has
        shutil.rmtree(target)
    return save_checkpoint(target, model=model, config=params, spec=spec, info=info, training_state=training_state)


def _restore(folder: Path, model: MultiTaskBase, optimizer: torch.optim.Optimizer, scheduler: Any,
             peml: PemlTraining | None, backward: StepBackward, state: dict[str, Any]) -> int:
    """Load a checkpoint's weights and training state; returns the epoch it was written at."""
    saved = load_training_state(folder)
    load_weights(folder, model)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if peml is not None and saved.get("peml"):
        peml.load_state_dict(saved["peml"])
    if saved.get("coordination"):  # checkpoints written before coordination state was saved have none
        backward.load_state_dict(saved["coordination"])
    rng = saved["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    state.update({k: saved[k] for k in ("epoch", "global_step", "best_score", "best", "stale")})
    state["sampler"] = saved["sampler"]
    return int(saved["epoch"])


def _prune_local_checkpoints(paths: list[Path], *, best_epoch: int) -> list[Path]:
    """Keep the latest and the best checkpoint in the work folder; delete the others."""
    keep = {paths[-1], *(p for p in paths if p.name == checkpoint_name(best_epoch))}
    for path in paths:
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)
    return [p for p in paths if p in keep]


def _epoch_metrics(
    epoch: int,
    tasks: list[TaskData],
    scores: Mapping[str, Mapping[str, float]],
    train_loss: float,
    task_losses: list[float],
) -> dict[str, Any]:
    metrics: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
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
