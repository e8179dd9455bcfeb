"""The one entry point the dispatcher calls: :func:`run_trial` trains and evaluates one trial.

A trial reads as its steps: :func:`build_trial` (resolve the hyperparameters, seed, load
the tasks, hold out the selection rows, build the model and its optimizers), then per
epoch :func:`train_and_score_epoch` (train; score the selection split and the dev split),
mark the best epoch, checkpoint, and ``report`` exactly once. Every epoch is checkpointed
with its full training state, so a trial interrupted anywhere continues from its last
epoch (``resume_from``); only the best and the latest checkpoints are kept on disk.

Selection never peeks at what is reported. With ``train.selection: holdout`` (the
default) a seeded share of each task's training rows is held out; the study's
``search.metric`` is measured there (``objective``), and patience, the best epoch, the
best checkpoint and the search all follow it in the study's ``search.mode``. The dev
split's scores (``avg_dev_score``, ``<task>/score``) are reported beside it and chosen
by nothing.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from searchsvc.spec import (
    DEFAULT_HYPERPARAMETERS,
    METHODS,
    OBJECTIVE_KEY,
    SELECTION_PREFIX,
    TASK_WEIGHT_PREFIX,
    StudySpec,
    hyperparameter_rule,
)
from workers.balance import LossBalancer
from workers.batching import prepare_tokenizer
from workers.checkpoint import checkpoint_name, load_training_state, load_weights, save_checkpoint
from workers.data import TaskData, load_spec_tasks
from workers.encoder import MultiTaskModel
from workers.model import build_model, resolve_pair_encoding
from workers.multitask import MultiTaskBase
from workers.nas.budget import check_parameter_budget
from workers.peml import PemlTraining, discretization_metrics, searched_prefix, split_held_out
from workers.probe import probe_heads
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


@dataclass
class TrialParts:
    """Everything one trial trains and evaluates with, built by :func:`build_trial` before any step."""

    spec: StudySpec
    method: str
    params: dict[str, Any]
    tasks: list[TaskData]
    model: MultiTaskBase
    pair_encoding: str
    device: torch.device
    pad_id: int
    sampler: MultiTaskSampler
    total_steps: int
    train_splits: list[Any]
    select_splits: list[Any]  # the rows selection looks at: held out from training, or the dev split
    dev_splits: list[Any]
    refs: list[TaskRef]
    peml: PemlTraining | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    backward: StepBackward
    balancer: LossBalancer
    trainable: int
    total: int

    @property
    def holdout(self) -> bool:
        return self.spec.train.selection == "holdout"


def trial_method(config: Mapping[str, Any], spec: StudySpec) -> str:
    """The trial's method: the config's ``method`` when the search chose one, else the spec's.

    Raises:
        ValueError: an unknown method name.
    """
    method = str(config.get("method", spec.method))
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def run_trial(
    config: dict[str, Any],
    *,
    spec: StudySpec,
    report: Report,
    workdir: str | Path,
    resume_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one trial; ``report(metrics, checkpoint_dir)`` once per epoch.

    ``metrics`` holds ``epoch`` (1-based), ``objective`` (the study's ``search.metric`` on the
    selection split: what patience, the best epoch and the search rank by), the dev split's
    ``avg_dev_score`` (mean of the tasks' primary scores), ``<task>/score`` and
    ``<task>/<metric>``, the same on the selection split under ``val/`` (with
    ``train.selection: holdout``), ``train_loss``, ``<task>/train_loss``, ``epoch_seconds``,
    ``trainable_params``, ``total_params``, ``added_param_ratio``, ``lr``, ``is_best``,
    ``grad_conflict`` (sampled), and with coordination ``grad_conflict_after`` and
    ``task_weight/<task>``; PEML adds ``nas/...`` (per-cell α distribution, entropy, pruned
    and chosen operations) and the discretization gap. ``resume_from``: a checkpoint of this
    trial to continue from. Returns the best epoch's metrics.

    Raises:
        ValueError: a bad config, task data or model (before any training starts).
    """
    _apply_thread_setting()
    trial = build_trial(config, spec=spec)
    mode = spec.search.mode
    state = {"epoch": 0, "global_step": 0, "best_score": -math.inf if mode == "max" else math.inf, "best": None, "stale": 0}
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    resumed_from = None
    if resume_from is not None:
        resumed_from = _restore(Path(resume_from), trial, state)
    probed = probe_before_training(trial) if resume_from is None else {}
    kept: list[Path] = []
    patience, max_epochs = spec.train.patience, spec.train.max_epochs
    for epoch in range(int(state["epoch"]) + 1, max_epochs + 1):
        if int(state["stale"]) >= patience:
            break  # a resumed trial that had already stopped early
        metrics = train_and_score_epoch(trial, epoch=epoch, global_step=int(state["global_step"]))
        state["global_step"] = int(state["global_step"]) + int(metrics["train_steps"])
        if resumed_from is not None:
            metrics["resumed_from_epoch"], resumed_from = resumed_from, None
        metrics.update(probed)
        probed = {}  # the first epoch's report says what probing did
        # with PEML's retrain epochs, only the retrained discrete model's epochs may be the objective
        _track_best(metrics, state, mode=mode, counts=trial.peml is None or trial.peml.scores_objective(epoch))
        state["epoch"] = epoch
        path = _save(work, trial, epoch=epoch, metrics=metrics, state=state)
        report(metrics, str(path))
        kept = _prune_local_checkpoints(kept + [path], best_epoch=int(state["best"]["epoch"]) if state["best"] else epoch)
        if int(state["stale"]) >= patience:
            break
    assert state["best"] is not None  # a first epoch always improves on ±inf; a checkpoint has one
    best = dict(state["best"])
    if "avg_dev_score" not in best:  # train.dev_scores: best_epoch
        best.update(score_dev(trial, work / checkpoint_name(int(best["epoch"]))))
    return best


def build_trial(config: Mapping[str, Any], *, spec: StudySpec) -> TrialParts:
    """Resolve the config, seed, load and split the data, build the model and its optimizers.

    Raises:
        ValueError: a bad config, task data or model.
    """
    method = trial_method(config, spec)
    tasks = load_spec_tasks(spec)
    names = [t.name for t in tasks]
    params = resolve_config({k: v for k, v in config.items() if k != "method"}, names)
    train_spec = spec.train
    seed_everything(train_spec.seed)
    device = _pick_device()
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(spec.model))
    pair_encoding = resolve_pair_encoding(train_spec.pair_encoding, spec.model)
    if train_spec.selection == "holdout":
        carved = [carve_selection(len(t.train), fraction=train_spec.holdout_fraction, key=f"{train_spec.subset_seed}/{t.name}")
                  for t in tasks]
    else:
        carved = [(list(range(len(t.train))), []) for t in tasks]
    bilevel = method == "peml" and spec.peml.schedule == "bilevel"
    rows = [_split_for_alpha(train_rows) if bilevel else (train_rows, []) for train_rows, _ in carved]
    weights = [float(params.get(f"{TASK_WEIGHT_PREFIX}{t.name}", t.weight)) for t in spec.tasks]
    gammas = sampling_weights(train_spec.sampling, [len(r[0]) for r in rows], weights=weights,
                              temperature=float(params["sampling_temperature"]))
    sampler = MultiTaskSampler([len(r[0]) for r in rows], batch_size=train_spec.batch_size, gammas=gammas, seed=train_spec.seed)
    total_steps = sampler.steps_per_epoch * train_spec.max_epochs
    model = build_model(spec.model, method=method, config=params, tasks=[t.info for t in tasks], total_steps=total_steps,
                        tokenizer=tokenizer, peml=spec.peml, pair_encoding=pair_encoding).to(device)
    model.remember_trainable()
    max_len = train_spec.max_seq_len

    def encode(picks: Sequence[Sequence[int]]) -> list[Any]:
        return [model.encode_split(tokenizer, i, [t.train[j] for j in picks[i]], max_seq_len=max_len) for i, t in enumerate(tasks)]

    train_splits = encode([r[0] for r in rows])
    dev_splits = [model.encode_split(tokenizer, i, t.dev, max_seq_len=max_len) for i, t in enumerate(tasks)]
    select_splits = encode([c[1] for c in carved]) if train_spec.selection == "holdout" else dev_splits
    pad_id = int(tokenizer.pad_token_id)
    peml = None
    if searched_prefix(model) is not None:
        held_out = held_sampler = None
        if bilevel:
            held_out = encode([r[1] for r in rows])
            held_sampler = MultiTaskSampler([len(r[1]) for r in rows], batch_size=train_spec.batch_size, gammas=gammas,
                                            seed=train_spec.seed + 1)
        peml = PemlTraining(model, spec.peml, arch_lr=float(params["arch_lr"]), max_epochs=train_spec.max_epochs,
                            steps_per_epoch=sampler.steps_per_epoch, held_out=held_out, held_out_sampler=held_sampler,
                            pad_id=pad_id, device=device, entropy_lambda=float(params["entropy_lambda"]))
    arch = set(map(id, peml.prefix.arch_parameters())) if peml else set()
    optimizer = build_optimizer(model, lr=params["lr"], weight_decay=params["weight_decay"], head_lr_scale=params["head_lr_scale"],
                                skip=arch)
    scheduler = linear_warmup_decay(optimizer, total_steps=total_steps, warmup_ratio=params["warmup_ratio"])
    similarity = None
    if spec.coordination.similarity_weight > 0:
        similarity = instruction_similarity(model, tokenizer, [t.instruction for t in spec.tasks], device=device)
    backward = StepBackward(model, task_names=names, coordination=spec.coordination, grad_alpha=float(params["grad_alpha"]),
                            similarity=similarity)
    trainable, total = model.parameter_counts()
    _check_budget(method, trainable=trainable, base=total - trainable)
    return TrialParts(
        spec=spec, method=method, params=params, tasks=tasks, model=model, pair_encoding=pair_encoding, device=device,
        pad_id=pad_id, sampler=sampler, total_steps=total_steps, train_splits=train_splits, select_splits=select_splits,
        dev_splits=dev_splits, refs=[TaskRef(name=t.name, metrics=t.metrics) for t in tasks], peml=peml,
        optimizer=optimizer, scheduler=scheduler, backward=backward,
        balancer=LossBalancer(len(tasks), mode=train_spec.loss_balance), trainable=trainable, total=total,
    )


def probe_before_training(trial: TrialParts) -> dict[str, float]:
    """LP-FT (:mod:`workers.probe`): with ``train.probe_epochs``, fit the heads on the starting
    model's features before the first step. Returns ``probe/<task>/loss_before|after`` for
    the first report; nothing for the ``head`` method (it is a probe already) or a model
    without heads (text-to-text)."""
    epochs = trial.spec.train.probe_epochs
    if epochs <= 0 or trial.method == "head" or not isinstance(trial.model, MultiTaskModel):
        return {}
    result = probe_heads(trial.model, trial.train_splits, epochs=epochs, lr=trial.spec.train.probe_lr,
                         batch_size=trial.spec.train.batch_size, pad_id=trial.pad_id, device=trial.device,
                         seed=trial.spec.train.seed)
    out: dict[str, float] = {}
    for task, before, after in zip(trial.tasks, result.loss_before, result.loss_after, strict=True):
        out[f"probe/{task.name}/loss_before"], out[f"probe/{task.name}/loss_after"] = before, after
    return out


def carve_selection(n_rows: int, *, fraction: float, key: str) -> tuple[list[int], list[int]]:
    """``(training rows, selection rows)`` of a task: a seeded random ``fraction`` held out.

    The same ``key`` (the subset seed and the task's name) gives the same rows in every
    trial and every attempt, so trials are compared on one selection split and a resumed
    trial trains on the rows it started with. Both lists are in row order; each side keeps
    at least one row.

    Raises:
        ValueError: fewer than 2 rows (nothing to hold out).
    """
    if n_rows < 2:
        raise ValueError(f"a task needs at least 2 training rows to hold some out for selection, got {n_rows}")
    held = min(max(1, int(round(n_rows * fraction))), n_rows - 1)
    chosen = set(random.Random(f"selection/{key}").sample(range(n_rows), held))
    return [i for i in range(n_rows) if i not in chosen], sorted(chosen)


def _split_for_alpha(train_rows: list[int]) -> tuple[list[int], list[int]]:
    """Bilevel PEML: the last share of the training rows moves α, the rest the weights."""
    weights, held = split_held_out(len(train_rows))
    return [train_rows[i] for i in weights], [train_rows[i] for i in held]


def _check_budget(method: str, *, trainable: int, base: int) -> None:
    if method == "peml" and base >= BUDGET_MIN_BASE:
        check_parameter_budget(trainable, base, fraction=PARAMETER_BUDGET, what="peml",
                               remedy="Lower prefix_length, nas_cells, lora_rank or peml.width.")


def train_and_score_epoch(trial: TrialParts, *, epoch: int, global_step: int) -> dict[str, Any]:
    """One epoch of training, then every score of the epoch's report (see :func:`run_trial`).

    With ``train.dev_scores: best_epoch`` the dev split is not scored here (only the
    selection split): :func:`score_dev` scores it once, for the best epoch.
    """
    started = time.perf_counter()
    peml = trial.peml
    if peml is not None:
        peml.begin_epoch(epoch)
    stats = train_epoch(
        trial.model, splits=trial.train_splits, sampler=trial.sampler, optimizer=trial.optimizer, scheduler=trial.scheduler,
        pad_id=trial.pad_id, device=trial.device, global_step=global_step, backward_fn=trial.backward,
        step_hook=peml.step_hook if peml is not None else None, balance_fn=trial.balancer,
        description=f"epoch {epoch}/{trial.spec.train.max_epochs}",
    )
    train_seconds = time.perf_counter() - started
    metrics: dict[str, Any] = {"epoch": epoch, "train_loss": stats.loss}
    metrics.update({f"{t.name}/train_loss": loss for t, loss in zip(trial.tasks, stats.task_losses, strict=True)})
    with_dev = trial.spec.train.dev_scores == "every_epoch" or not trial.holdout
    metrics.update(_model_scores(trial, dev=with_dev, gap=peml.gap_metrics if peml is not None else discretization_metrics))
    extra: dict[str, Any] = {}
    if peml is not None:
        extra.update(peml.report(peml.prune()))
    metrics.update(stats.diagnostics)
    metrics.update(extra)
    metrics[OBJECTIVE_KEY] = objective_of(metrics, trial.spec)
    metrics.update({f"loss_weight/{t.name}": w for t, w in zip(trial.tasks, trial.balancer.weights(), strict=True)})
    metrics.update(epoch_seconds=time.perf_counter() - started, train_seconds=train_seconds, train_steps=stats.steps,
                   seconds_per_step=train_seconds / max(1, stats.steps), trainable_params=trial.trainable,
                   total_params=trial.total, added_param_ratio=trial.trainable / max(1, trial.total - trial.trainable),
                   lr=float(trial.scheduler.get_last_lr()[0]), separate_pairs=float(trial.pair_encoding == "separate"))
    if trial.holdout:
        metrics[f"{SELECTION_PREFIX}rows"] = sum(len(split) for split in trial.select_splits)
    return metrics


def _model_scores(trial: TrialParts, *, dev: bool, select: bool = True,
                  gap: Callable[[Mapping[str, float], Mapping[str, float]], dict[str, float]] = discretization_metrics,
                  ) -> dict[str, Any]:
    """The model's scores as reported: PEML's discrete model (what the artifact serves), with
    its relaxed scores and the discretization gap beside them; any other model as it is."""
    if trial.peml is None:
        return _scores(trial, dev=dev, select=select)
    relaxed = _scores(trial, dev=dev, select=select)
    with trial.peml.prefix.discretized():
        metrics = _scores(trial, dev=dev, select=select)
    prefix = "" if dev else SELECTION_PREFIX  # the gap where this call scored: dev, else the selection split
    metrics.update({f"{prefix}{t.name}/relaxed_score": relaxed[f"{prefix}{t.name}/score"] for t in trial.tasks})
    gaps = gap({"avg_dev_score": relaxed[f"{prefix}avg_dev_score"]}, {"avg_dev_score": metrics[f"{prefix}avg_dev_score"]})
    metrics.update({f"{prefix}{k}": v for k, v in gaps.items()})
    return metrics


def _scores(trial: TrialParts, *, dev: bool, select: bool = True) -> dict[str, Any]:
    """The dev split's scores (``dev``), and the selection split's under ``val/`` (when it is not the dev split)."""
    def score(splits: list[Any]) -> dict[str, Any]:
        scores = evaluate(trial.model, tasks=trial.refs, splits=splits, pad_id=trial.pad_id, device=trial.device,
                          batch_size=2 * trial.spec.train.batch_size)
        return _task_scores(trial.tasks, scores)

    out = score(trial.dev_splits) if dev else {}
    if trial.holdout and select:
        out.update({f"{SELECTION_PREFIX}{k}": v for k, v in score(trial.select_splits).items()})
    return out


def score_dev(trial: TrialParts, checkpoint: Path) -> dict[str, Any]:
    """The dev split's scores of a checkpoint's weights (``train.dev_scores: best_epoch``: the
    best epoch's, once, after training; selection never sees them)."""
    load_weights(checkpoint, trial.model)
    return _model_scores(trial, dev=True, select=False)


def objective_of(metrics: Mapping[str, Any], spec: StudySpec) -> float:
    """The study's ``search.metric`` where selection may look: ``train_loss`` as is; a score
    (``avg_dev_score``, ``<task>/<metric>``) on the selection split.

    Raises:
        ValueError: the metric is not among the epoch's metrics (a task metric the task lacks).
    """
    name = spec.search.metric
    if name != "train_loss" and spec.train.selection == "holdout":
        name = SELECTION_PREFIX + name
    value = metrics.get(name)
    if not isinstance(value, (int, float)):
        known = sorted(k for k in metrics if k.startswith(SELECTION_PREFIX) or "/" not in k)[:20]
        raise ValueError(f"search.metric {spec.search.metric!r}: the trial reports no {name!r} (some it does: {known})")
    return float(value)


def _track_best(metrics: dict[str, Any], state: dict[str, Any], *, mode: str, counts: bool = True) -> None:
    """Mark the epoch best (or not) by the objective in the study's mode; count stale epochs for
    patience. An epoch that does not ``count`` (a PEML search epoch before its retrain) is neither."""
    value, best = float(metrics[OBJECTIVE_KEY]), float(state["best_score"])
    is_best = counts and (value > best if mode == "max" else value < best)
    metrics["is_best"] = float(is_best)
    if is_best:
        state.update(best_score=value, best=dict(metrics), stale=0)
    elif counts:
        state["stale"] = int(state["stale"]) + 1


def _save(work: Path, trial: TrialParts, *, epoch: int, metrics: dict[str, Any], state: dict[str, Any]) -> Path:
    spec, model = trial.spec, trial.model
    info = {
        "epoch": epoch, "metrics": metrics, "method": trial.method, "model": spec.model, "family": model.family,
        "total_steps": trial.total_steps, "max_seq_len": spec.train.max_seq_len,
        "tasks": [t.info.to_dict() for t in trial.tasks], "pair_encoding": trial.pair_encoding,
    }
    training_state = {
        **{k: state[k] for k in ("epoch", "global_step", "best_score", "best", "stale")},
        "optimizer": trial.optimizer.state_dict(), "scheduler": trial.scheduler.state_dict(), "sampler": trial.sampler,
        "peml": trial.peml.state_dict() if trial.peml is not None else None, "coordination": trial.backward.state_dict(),
        "balancer": trial.balancer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    target = work / checkpoint_name(epoch)
    if target.exists():  # a resumed trial re-running an epoch whose checkpoint it already has
        shutil.rmtree(target)
    return save_checkpoint(target, model=model, config=trial.params, spec=spec, info=info, training_state=training_state)


def _restore(folder: Path, trial: TrialParts, state: dict[str, Any]) -> int:
    """Load a checkpoint's weights and training state into the trial; returns the epoch it was written at."""
    saved = load_training_state(folder)
    load_weights(folder, trial.model)
    trial.optimizer.load_state_dict(saved["optimizer"])
    trial.scheduler.load_state_dict(saved["scheduler"])
    if trial.peml is not None and saved.get("peml"):
        trial.peml.load_state_dict(saved["peml"])
    if saved.get("coordination"):  # checkpoints written before coordination state was saved have none
        trial.backward.load_state_dict(saved["coordination"])
    if saved.get("balancer"):
        trial.balancer.load_state_dict(saved["balancer"])
    rng = saved["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    state.update({k: saved[k] for k in ("epoch", "global_step", "best_score", "best", "stale")})
    trial.sampler = saved["sampler"]
    return int(saved["epoch"])


def _prune_local_checkpoints(paths: list[Path], *, best_epoch: int) -> list[Path]:
    """Keep the latest and the best checkpoint in the work folder; delete the others."""
    keep = {paths[-1], *(p for p in paths if p.name == checkpoint_name(best_epoch))}
    for path in paths:
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)
    return [p for p in paths if p in keep]


def _task_scores(tasks: list[TaskData], scores: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """``<task>/score`` (the primary metric), ``<task>/<metric>`` and ``avg_dev_score`` of one split's scores."""
    metrics: dict[str, Any] = {}
    primaries = []
    for task in tasks:
        task_scores = scores[task.name]
        primaries.append(task_scores[task.primary_metric])
        metrics[f"{task.name}/score"] = task_scores[task.primary_metric]
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
