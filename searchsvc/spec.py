"""The study spec: one validated type, built once at the edge and used everywhere after.

A spec arrives as YAML or JSON from the CLI, the SDK or the REST API. :func:`parse_spec`
turns it into a :class:`StudySpec` or raises :class:`~searchsvc.errors.SpecError` listing
every problem with its field path (``search.space.lr.low``), so a user fixes the whole
spec in one go. Nothing here imports torch, Ray or SQLAlchemy: the SDK uses it too.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from searchsvc.errors import SpecError

# Methods the trainers implement. The spec refuses any other name, so a typo fails at
# submission rather than an hour later on a worker.
METHODS: tuple[str, ...] = ("peml", "lora", "prefix", "lora+prefix", "adalora")
ALGORITHMS: tuple[str, ...] = ("tpe", "hyperopt", "random")
SCHEDULERS: tuple[str, ...] = ("fifo", "asha")
SAMPLING: tuple[str, ...] = ("proportional", "temperature", "round_robin")
SUBSETS: tuple[str, ...] = ("random", "first")
SCHEDULES: tuple[str, ...] = ("simultaneous", "bilevel", "lora_first", "prefix_first")
ACTIVATIONS: tuple[str, ...] = ("relu", "tanh", "leaky_relu", "gelu")
# A task's sampling weight is searchable as ``weight_<task name>``.
TASK_WEIGHT_PREFIX = "weight_"

# Hyperparameters a trial config may carry, with the values each accepts. A search space
# over anything else is refused: the trainer would silently ignore it.
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "lr": {"kind": "float", "min": 0.0, "min_open": True, "max": 1.0},
    "prefix_length": {"kind": "int", "min": 1, "max": 512},
    "lora_rank": {"kind": "int", "min": 1, "max": 1024},
    "lora_alpha": {"kind": "float", "min": 0.0, "min_open": True, "max": 4096.0},
    "lora_dropout": {"kind": "float", "min": 0.0, "max": 0.9},
    "weight_decay": {"kind": "float", "min": 0.0, "max": 1.0},
    "warmup_ratio": {"kind": "float", "min": 0.0, "max": 0.5},
    "head_lr_scale": {"kind": "float", "min": 0.0, "min_open": True, "max": 1000.0},
    "sampling_temperature": {"kind": "float", "min": 0.0, "min_open": True, "max": 100.0},
    "entropy_lambda": {"kind": "float", "min": 0.0, "max": 10.0},
    "grad_alpha": {"kind": "float", "min": 0.0, "max": 100.0},
    "nas_cells": {"kind": "int", "min": 1, "max": 24},
    "arch_lr": {"kind": "float", "min": 0.0, "min_open": True, "max": 1.0},
}
_TASK_WEIGHT_RULE: dict[str, Any] = {"kind": "float", "min": 0.0, "min_open": True, "max": 100.0}

# The values a trial uses for hyperparameters the space does not search.
DEFAULT_HYPERPARAMETERS: dict[str, Any] = {
    "lr": 5e-3,
    "prefix_length": 10,
    "lora_rank": 8,
    "lora_alpha": 16.0,
    "lora_dropout": 0.0,
    "weight_decay": 0.0,
    "warmup_ratio": 0.06,
    "head_lr_scale": 1.0,
    "sampling_temperature": 2.0,
    "entropy_lambda": 1e-3,
    "grad_alpha": 1.0,
    "nas_cells": 6,
    "arch_lr": 3e-3,
}

_TASK_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_TASK_FILES = ("train.jsonl", "dev.jsonl", "meta.json")


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    """A registered name, or a ValueError that lists the names there are."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(_Strict):
    """One task: a folder with ``train.jsonl``, ``dev.jsonl`` and ``meta.json``."""

    name: str
    path: str
    weight: float = Field(1.0, gt=0, description="relative sampling weight γ of this task")
    instruction: str | None = Field(None, description="optional task description text")

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not _TASK_NAME.match(value):
            raise ValueError("must be 1-64 lowercase letters, digits, '_' or '-', starting with a letter or digit")
        return value

    @field_validator("path")
    @classmethod
    def _folder_is_a_task(cls, value: str) -> str:
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise ValueError(f"no task folder at {value!r}")
        missing = [name for name in _TASK_FILES if not (folder / name).is_file()]
        if missing:
            raise ValueError(f"task folder {value!r} lacks {', '.join(missing)}")
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"meta.json in {value!r} is not valid JSON: {exc}") from None
        if not isinstance(meta, dict) or "metric" not in meta:
            raise ValueError(f"meta.json in {value!r} must be an object with a 'metric' field")
        return str(folder.resolve())


class _Uniform(_Strict):
    type: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> _Uniform:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class _LogUniform(_Uniform):
    type: Literal["loguniform"]  # type: ignore[assignment]

    @model_validator(mode="after")
    def _positive(self) -> _LogUniform:
        if self.low <= 0:
            raise ValueError(f"low ({self.low}) must be > 0 for a log scale")
        return self


class _Int(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> _Int:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"low ({self.low}) must be > 0 for a log scale")
        return self


class _Choice(_Strict):
    type: Literal["choice"]
    values: list[Any] = Field(min_length=1)


Dimension = Annotated[_Uniform | _LogUniform | _Int | _Choice, Field(discriminator="type")]


def dimension_bounds(dim: Dimension) -> list[Any]:
    """The extreme values a dimension can produce (for checking them against the trainer's limits)."""
    if isinstance(dim, _Choice):
        return list(dim.values)
    return [dim.low, dim.high]


class SearchSpec(_Strict):
    algorithm: str = "tpe"
    num_trials: int = Field(8, gt=0, le=100_000)
    max_concurrent: int = Field(1, gt=0, le=1024)
    metric: str = "avg_dev_score"
    mode: Literal["max", "min"] = "max"
    seed: int = 0
    space: dict[str, Dimension] = Field(default_factory=dict)
    scheduler: str = Field("fifo", description="fifo (every trial runs to its end or its patience) | asha")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs every trial gets before it can be stopped")
    reduction_factor: float = Field(3.0, gt=1.0, description="ASHA: keep 1/reduction_factor of trials at each rung")
    max_retries: int = Field(1, ge=0, le=20, description="times a failed trial is run again, from its last checkpoint")

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        return _one_of(value, SCHEDULERS, "scheduler")

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        return _one_of(value, ALGORITHMS, "algorithm")


class TrainSpec(_Strict):
    max_epochs: int = Field(3, gt=0, le=1000)
    patience: int = Field(3, gt=0, le=1000)
    batch_size: int = Field(16, gt=0, le=4096)
    max_seq_len: int = Field(128, ge=8, le=8192)
    seed: int = 0
    sampling: str = "proportional"
    max_train_examples: int | None = Field(None, gt=0, description="per task; which rows: see subset")
    max_dev_examples: int | None = Field(None, gt=0, description="per task; which rows: see subset")
    subset: str = Field("random", description="how the max_*_examples rows are picked: 'random' (a fixed sample, "
                                              "the same in every trial whatever seed) or 'first' (the file's first rows)")
    subset_seed: int = Field(0, description="the seed of the 'random' subset")

    @field_validator("sampling")
    @classmethod
    def _known_sampling(cls, value: str) -> str:
        return _one_of(value, SAMPLING, "sampling")

    @field_validator("subset")
    @classmethod
    def _known_subset(cls, value: str) -> str:
        return _one_of(value, SUBSETS, "subset")


class PemlSpec(_Strict):
    """PrefixNAS settings (method ``peml``). ``cells`` is the default for ``nas_cells``."""

    cells: int = Field(6, ge=1, le=24)
    width: int | None = Field(None, gt=0, le=8192, description="width d of the prefix vectors and cells; default min(hidden, 128)")
    activations: list[str] = Field(default_factory=lambda: list(ACTIVATIONS), min_length=1)
    dropouts: list[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5], min_length=1)
    layernorm: list[bool] = Field(default_factory=lambda: [True, False], min_length=1)
    schedule: str = Field("simultaneous", description="simultaneous | bilevel (first-order) | lora_first | prefix_first")
    prune_threshold: float = Field(0.3, ge=0.0, lt=1.0, description="prune a candidate whose weight stays below this fraction of uniform")
    prune_patience: int = Field(2, ge=1, description="consecutive pruning checks under the threshold before pruning")
    prune_every: int = Field(50, ge=0, le=1_000_000, description="check for pruning every k training steps; 0: at epoch ends only")
    arch_weight_decay: float = Field(0.0, ge=0.0, le=1e-4, description="decoupled weight decay on α (never coupled: Adam would "
                                     "divide it by α's tiny gradient scale and pin α at 0)")
    entropy_schedule: str = Field("linear", description="linear: λ rises from 0 to entropy_lambda over the search steps | constant")
    relaxation: str = Field("softmax", description="softmax | gumbel (annealed temperature) | ste (straight-through argmax)")
    gumbel_temperature: tuple[float, float] = Field((1.0, 0.1), description="Gumbel τ at the start and the end of the search (geometric)")
    search_dropout: bool | None = Field(None, description="search the cells' dropout; default only with the bilevel schedule "
                                        "(dropout changes nothing at evaluation, so α trained on training batches cannot judge it); "
                                        "otherwise every candidate uses the first of dropouts")
    converged_weight: float = Field(0.5, gt=0.0, lt=1.0, description="nas/converged: every cell's top mixture weight above this")
    retrain_epochs: int = Field(0, ge=0, le=10_000, description="the last epochs of train.max_epochs train the discrete "
                                "architecture (argmax per cell, α frozen); 0: search in every epoch")

    @field_validator("activations")
    @classmethod
    def _known_activations(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"unknown activation(s) {unknown}; choose from {', '.join(ACTIVATIONS)}")
        if len(set(value)) != len(value):
            raise ValueError("activations repeat")
        return value

    @field_validator("dropouts")
    @classmethod
    def _dropouts_in_range(cls, value: list[float]) -> list[float]:
        if any(not 0.0 <= d < 1.0 for d in value):
            raise ValueError("every dropout must be in [0, 1)")
        return value

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, value: str) -> str:
        return _one_of(value, SCHEDULES, "schedule")

    @field_validator("entropy_schedule")
    @classmethod
    def _known_entropy_schedule(cls, value: str) -> str:
        return _one_of(value, ("linear", "constant"), "entropy_schedule")

    @field_validator("relaxation")
    @classmethod
    def _known_relaxation(cls, value: str) -> str:
        return _one_of(value, ("softmax", "gumbel", "ste"), "relaxation")

    @field_validator("gumbel_temperature")
    @classmethod
    def _positive_temperatures(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 < t <= 100.0 for t in value):
            raise ValueError("both Gumbel temperatures must be in (0, 100]")
        return value

    def dropout_searched(self) -> bool:
        """Whether the candidates' dropout is part of the search (see ``search_dropout``)."""
        return self.schedule == "bilevel" if self.search_dropout is None else self.search_dropout


class CoordinationSpec(_Strict):
    """Gradient coordination across tasks (conflict projection, dynamic task weights)."""

    enabled: bool = False
    project: bool = Field(True, description="project conflicting task gradients (PCGrad-style)")
    every_k: int = Field(1, ge=1, le=10_000, description="coordinate every k steps; plain weighted steps in between")
    similarity_weight: float = Field(0.0, ge=0.0, le=100.0, description="weight of the task-similarity regularizer")


class ResourcesSpec(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    custom: dict[str, float] = Field(default_factory=dict)


class StudySpec(_Strict):
    """Everything a study needs; see DESIGN.md, "Public contract"."""

    name: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1)
    tasks: list[TaskSpec] = Field(min_length=1)
    method: str = "lora+prefix"
    search: SearchSpec = Field(default_factory=SearchSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    peml: PemlSpec = Field(default_factory=PemlSpec)
    coordination: CoordinationSpec = Field(default_factory=CoordinationSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return _one_of(value, METHODS, "method")

    @model_validator(mode="after")
    def _cross_checks(self) -> StudySpec:
        problems = _cross_field_problems(self)
        if problems:
            raise _CrossFieldErrors(problems)
        return self

    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``parse_spec(spec.to_dict()) == spec``."""
        return self.model_dump(mode="json")


class _CrossFieldErrors(ValueError):
    """Carries several (path, message) pairs out of a model validator."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))


def _cross_field_problems(spec: StudySpec) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for index, task in enumerate(spec.tasks):
        if task.name in seen:
            problems.append((f"tasks.{index}.name", f"duplicate task name {task.name!r} (also tasks.{seen[task.name]})"))
        seen.setdefault(task.name, index)
    for name, dim in spec.search.space.items():
        path = f"search.space.{name}"
        rule = hyperparameter_rule(name, seen)
        if rule is None:
            known = ", ".join(sorted(HYPERPARAMETERS) + [f"{TASK_WEIGHT_PREFIX}<task>"])
            problems.append((path, f"unknown hyperparameter; known: {known}"))
            continue
        if rule["kind"] == "int" and isinstance(dim, _Uniform):
            problems.append((path, f"{name} is an integer; use type 'int' or 'choice'"))
        for value in dimension_bounds(dim):
            message = _value_problem(name, value, rule)
            if message:
                problems.append((path, message))
                break
    metric = spec.search.metric
    if metric not in ("avg_dev_score", "train_loss"):
        task, _, _sub = metric.partition("/")
        if task not in seen or not _sub:
            problems.append(("search.metric", f"unknown metric {metric!r}; use avg_dev_score, train_loss or '<task>/<metric>'"))
    return problems


def hyperparameter_rule(name: str, task_names: Any) -> dict[str, Any] | None:
    """The accepted values of a trial config key, or None if the key is unknown.

    ``weight_<task>`` (a task's sampling weight) is known for every task of the study.
    """
    if name in HYPERPARAMETERS:
        return HYPERPARAMETERS[name]
    if name.startswith(TASK_WEIGHT_PREFIX) and name.removeprefix(TASK_WEIGHT_PREFIX) in task_names:
        return _TASK_WEIGHT_RULE
    return None


def _value_problem(name: str, value: Any, rule: dict[str, Any]) -> str | None:
    if rule["kind"] == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{name} takes integers, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name} takes numbers, got {value!r}"
    low, high = rule["min"], rule["max"]
    too_low = value <= low if rule.get("min_open") else value < low
    if too_low or value > high:
        bracket = "(" if rule.get("min_open") else "["
        return f"{name}={value!r} is outside {bracket}{low}, {high}]"
    return None


def parse_spec(data: Any) -> StudySpec:
    """Validate raw spec data (a dict, or YAML/JSON text) into a :class:`StudySpec`.

    Raises:
        SpecError: listing every problem as ``(field path, message)``.
    """
    if isinstance(data, (str, bytes)):
        data = _load_text(data)
    if isinstance(data, StudySpec):
        return data
    if not isinstance(data, dict):
        raise SpecError([("<root>", f"a study spec must be a mapping, got {type(data).__name__}")])
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_problems_from(exc)) from None


def _load_text(text: str | bytes) -> Any:
    import yaml  # YAML is a superset of JSON, so one parser reads both.

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([("<root>", f"not valid YAML or JSON: {exc}")]) from None


def _problems_from(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _CrossFieldErrors):
            problems.extend(ctx_error.problems)
            continue
        loc = [str(part) for part in error["loc"]]
        # Drop the union tag pydantic adds for discriminated unions (``uniform``, ...).
        if len(loc) >= 4 and loc[:2] == ["search", "space"] and loc[3] in ("uniform", "loguniform", "int", "choice"):
            del loc[3]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append((".".join(loc) or "<root>", message))
    return problems

