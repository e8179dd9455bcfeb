"""The study spec: one validated type, built once at the edge and used everywhere after.

A spec arrives as YAML or JSON from the CLI, the SDK or the REST API. :func:`parse_spec`
turns it into a :class:`StudySpec` or raises :class:`~searchsvc.errors.SpecError` listing
every problem with its field path (``search.space.lr.low``), so a user fixes the whole
spec in one go. Nothing here imports torch, Ray or SQLAlchemy: the SDK uses it too.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from searchsvc.errors import SpecError
from searchsvc.paths import PathPolicy


class ModelPolicy(Protocol):
    """Turns a spec's ``model`` into what workers load, or raises ValueError (see
    :class:`searchsvc.model_registry.ModelResolver`; a bare :class:`PathPolicy` also is one)."""

    def model(self, value: str) -> str: ...

# Methods the trainers implement. The spec refuses any other name, so a typo fails at
# submission rather than an hour later on a worker.
METHODS: tuple[str, ...] = ("peml", "lora", "prefix", "lora+prefix", "adalora", "head")
ALGORITHMS: tuple[str, ...] = ("tpe", "hyperopt", "random")
SCHEDULERS: tuple[str, ...] = ("fifo", "asha")
SAMPLING: tuple[str, ...] = ("proportional", "temperature", "round_robin")
SUBSETS: tuple[str, ...] = ("random", "first")
PAIR_ENCODINGS: tuple[str, ...] = ("auto", "packed", "separate")
SELECTIONS: tuple[str, ...] = ("holdout", "dev")
LOSS_BALANCES: tuple[str, ...] = ("rms", "none")
DEV_SCORES: tuple[str, ...] = ("every_epoch", "best_epoch")
# The key of every report that holds the study's metric, measured where selection may look
# (the held-out rows, not the reported dev split): Tune, the searcher, ASHA, the best
# checkpoint and the store all rank trials and epochs by it, and by nothing else.
OBJECTIVE_KEY = "objective"
# Report keys of the selection split are the dev split's keys with this prefix.
SELECTION_PREFIX = "val/"
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

# ``method`` may itself be searched (a ``choice`` of METHODS in ``search.space``); a trial
# config then carries ``"method": "<name>"``. It is not in HYPERPARAMETERS: it has no
# default of its own (the spec's ``method`` is the default) and it is a name, not a number.
METHOD_KEY = "method"
_METHOD_RULE: dict[str, Any] = {"kind": "method", "values": METHODS}

# The ONE table of which method reads which method-specific hyperparameter. A hyperparameter
# of HYPERPARAMETERS that no method lists here is read by every method (lr, weight_decay,
# warmup_ratio, head_lr_scale, sampling_temperature, grad_alpha with coordination, and the
# task weights). The search space uses it twice: a fixed method refuses a dimension it
# would ignore, and with ``method`` as a choice each of these is sampled only in trials
# whose method reads it, so the searcher's history never holds a value that did nothing.
_LORA = frozenset({"lora_rank", "lora_alpha", "lora_dropout"})
_PREFIX = frozenset({"prefix_length"})
METHOD_HYPERPARAMETERS: dict[str, frozenset[str]] = {
    "head": frozenset(),
    "lora": _LORA,
    "adalora": _LORA,
    "prefix": _PREFIX,
    "lora+prefix": _LORA | _PREFIX,
    "peml": _LORA | _PREFIX | {"nas_cells", "arch_lr", "entropy_lambda"},
}


def methods_using(name: str) -> tuple[str, ...]:
    """The methods whose trials read hyperparameter ``name`` (every method for a shared one)."""
    users = tuple(method for method in METHODS if name in METHOD_HYPERPARAMETERS.get(method, ()))
    specific = any(name in names for names in METHOD_HYPERPARAMETERS.values())
    return users if specific else METHODS

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
    "entropy_lambda": 1e-2,
    "grad_alpha": 1.0,
    "nas_cells": 6,
    "arch_lr": 3e-2,
}

_TASK_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
TASK_FILES = ("train.jsonl", "dev.jsonl", "meta.json")
MAX_PATH_LENGTH = 1024  # paths and model ids; longer is no real path, and every list call returns it
_MAX_MESSAGE = 300  # a problem's message never grows with the input that caused it


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    """A registered name, or a ValueError that lists the names there are."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
    return value


class _Strict(BaseModel):
    """Unknown fields are errors, and types are strict: ``"5"``, ``true`` or ``5.0`` is not
    an integer (a quoted number in a spec is a mistake worth naming, not guessing at)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
DATASET_NAME_RULE = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit, not only digits"


def check_dataset_name(value: str) -> str:
    """A dataset's name: short, a safe charset (it names a file nowhere, but shows in lists
    and messages), and never all digits, so a spec's ``dataset: 12`` can only mean an id."""
    if not _DATASET_NAME.match(value) or value.isdigit():
        raise ValueError(f"a dataset name must be {DATASET_NAME_RULE}")
    return value


class TaskSpec(_Strict):
    """One task: a folder with ``train.jsonl``, ``dev.jsonl`` and ``meta.json``, named by
    ``path`` or by ``dataset`` (an uploaded dataset's id, or its name).

    On the server, ``parse_spec(..., paths=policy)`` confines the folder to the
    operator's allowed roots before anything is read (see :mod:`searchsvc.paths`).
    Messages name the field, never the path: on a server they would map its files.
    The service resolves ``dataset`` to the owner's stored folder before parsing and
    stores both (``dataset`` as the id); see :mod:`searchsvc.datasets`.
    """

    name: str
    path: str | None = Field(None, min_length=1, max_length=MAX_PATH_LENGTH)
    dataset: int | str | None = Field(None, description="an uploaded dataset of yours: its id, or its name")
    weight: float = Field(1.0, gt=0, le=1e6, description="relative sampling weight γ of this task")
    instruction: str | None = Field(None, max_length=10_000, description="optional task description text")

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not _TASK_NAME.match(value):
            raise ValueError("must be 1-64 lowercase letters, digits, '_' or '-', starting with a letter or digit")
        return value

    @field_validator("path")
    @classmethod
    def _folder_is_a_task(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:  # ``path: null`` as if absent: the task names a dataset instead
            return None
        policy = (info.context or {}).get("paths")
        folder = policy.task_folder(value) if policy is not None else Path(value).expanduser()
        if not folder.is_dir():
            raise ValueError("no task folder at this path")
        missing = [name for name in TASK_FILES if not (folder / name).is_file()]
        if missing:
            raise ValueError(f"the task folder lacks {', '.join(missing)}")
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("the task folder's meta.json is not valid JSON") from None
        if not isinstance(meta, dict) or "metric" not in meta:
            raise ValueError("the task folder's meta.json must be an object with a 'metric' field")
        return str(folder.resolve())

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_ref(cls, value: Any) -> Any:
        if isinstance(value, str):
            return check_dataset_name(value)
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**31):
            return value
        raise ValueError("must be a dataset's id (a positive integer) or its name (a string)")

    @model_validator(mode="after")
    def _names_its_data(self) -> TaskSpec:
        if self.path is None and self.dataset is None:
            raise ValueError("give the task's data: 'path' (a task folder) or 'dataset' (an uploaded dataset)")
        return self


class When(_Strict):
    """A dimension's condition: sample it only in trials whose method is one of ``method``.

    Only meaningful with ``method`` as a ``choice`` in the space. Without ``when``, a
    method-specific hyperparameter is sampled for every method of the choice that reads it
    (see METHOD_HYPERPARAMETERS); ``when`` narrows that set, it never widens it.
    """

    method: list[str] = Field(min_length=1)


class _Dimension(_Strict):
    when: When | None = Field(None, description="sample only for these methods (with method as a choice)")


class _Uniform(_Dimension):
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


class _Int(_Dimension):
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


class _Choice(_Dimension):
    type: Literal["choice"]
    values: list[Any] = Field(min_length=1)


Dimension = Annotated[_Uniform | _LogUniform | _Int | _Choice, Field(discriminator="type")]


def dimension_bounds(dim: Dimension) -> list[Any]:
    """The extreme values a dimension can produce (for checking them against the trainer's limits)."""
    if isinstance(dim, _Choice):
        return list(dim.values)
    return [dim.low, dim.high]


class SearchSpec(_Strict):
    """How a study searches: the algorithm, the budget, the objective and the space.

    ``space`` maps a hyperparameter (a key of HYPERPARAMETERS, ``weight_<task>``, or
    ``method``) to a dimension. With ``method: {type: choice, values: [lora, peml]}`` the
    study searches the method too: each trial draws a method, then only the dimensions
    that method reads (METHOD_HYPERPARAMETERS), narrowed by a dimension's
    ``when: {method: [...]}``; the rest keep their defaults.
    """

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

    def method_choices(self) -> list[str] | None:
        """The methods searched over when ``method`` is a ``choice`` in the space, else None."""
        dim = self.space.get(METHOD_KEY)
        return [str(value) for value in dim.values] if isinstance(dim, _Choice) else None

    def sampled_for(self, name: str) -> tuple[str, ...]:
        """With ``method`` a choice: the methods of the trials that sample dimension ``name``
        (those of the choice that read it, narrowed by its ``when``)."""
        allowed = set(methods_using(name))
        dim = self.space[name]
        if dim.when is not None:
            allowed &= set(dim.when.method)
        return tuple(method for method in self.method_choices() or () if method in allowed)

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
    pair_encoding: str = Field("auto", description="sentence pairs: 'packed' (one sequence), 'separate' (each text "
                                                   "encoded alone, heads on [u, v, |u-v|, u*v], cosine for regression), "
                                                   "or 'auto' (separate for bi-encoder checkpoints, else packed)")
    selection: str = Field("holdout", description="where epochs and trials are selected: 'holdout' (holdout_fraction "
                                                  "of each task's training rows, seeded by subset_seed; the dev split "
                                                  "is then only reported) or 'dev' (the dev split itself: its scores "
                                                  "are then optimistic)")
    holdout_fraction: float = Field(0.2, gt=0.0, le=0.5, description="share of training rows held out for selection")
    loss_balance: str = Field("rms", description="'rms': each task's loss divided by the square root of its running "
                                                 "mean, so a regression MSE and a cross-entropy pull with gradients of "
                                                 "one scale; 'none': the plain mean")
    dev_scores: str = Field("every_epoch", description="when the dev split is scored: 'every_epoch' (every report "
                                                       "carries it) or 'best_epoch' (once, for the best epoch, after "
                                                       "training: saves time when only the final score matters)")
    probe_epochs: int = Field(0, ge=0, le=100, description="linear probing first (LP-FT): epochs of training the task heads "
                                                          "alone on the starting model's features before the adapter "
                                                          "trains, so random heads do not bend the pretrained features; 0: off")
    probe_lr: float = Field(5e-3, gt=0.0, le=1.0, description="the heads' learning rate while probing (Adam)")

    @field_validator("dev_scores", "pair_encoding", "selection", "loss_balance", "sampling", "subset")
    @classmethod
    def _registered_name(cls, value: str, info: ValidationInfo) -> str:
        return _one_of(value, _TRAIN_CHOICES[info.field_name], info.field_name)


# The names each of TrainSpec's "one of" fields accepts.
_TRAIN_CHOICES: dict[str, tuple[str, ...]] = {
    "dev_scores": DEV_SCORES, "pair_encoding": PAIR_ENCODINGS, "selection": SELECTIONS, "loss_balance": LOSS_BALANCES,
    "sampling": SAMPLING, "subset": SUBSETS,
}


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
    gumbel_temperature: list[float] = Field(default_factory=lambda: [1.0, 0.1], min_length=2, max_length=2,
                                            description="Gumbel τ at the start and the end of the search (geometric)")
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
    def _positive_temperatures(cls, value: list[float]) -> list[float]:
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


_ResourceName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_:.\-]{0,63}$")]
_ResourceAmount = Annotated[float, Field(gt=0, le=1e6)]


class ResourcesSpec(_Strict):
    """What one trial reserves on a Ray node. Bounded: a sliver of a CPU packs trials onto
    one core, and a request no machine has would wait for ever (the runner also checks
    the cluster and fails such a study at once, see ``dispatch.resources``)."""

    cpu: float = Field(1.0, ge=0.5, le=512)
    gpu: float = Field(0.0, ge=0, le=16)
    custom: dict[_ResourceName, _ResourceAmount] = Field(
        default_factory=dict, max_length=16, description="Ray custom resources per trial, e.g. a node label"
    )


class StudySpec(_Strict):
    """Everything a study needs; see DESIGN.md, "Public contract"."""

    name: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=MAX_PATH_LENGTH,
                       description="a model id from the service's registry (GET /v1/models), study:<id> (your "
                                   "study's exported model), a model folder, or a hub id where the service allows it")
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

    @field_validator("model")
    @classmethod
    def _allowed_model(cls, value: str, info: ValidationInfo) -> str:
        context = info.context or {}
        policy = context.get("models") or context.get("paths")
        return value if policy is None else str(policy.model(value))

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
    problems.extend(_space_problems(spec, seen))
    metric = spec.search.metric
    if metric not in ("avg_dev_score", "train_loss"):
        task, _, _sub = metric.partition("/")
        if task not in seen or not _sub:
            problems.append(("search.metric", f"unknown metric {metric!r}; use avg_dev_score, train_loss or '<task>/<metric>'"))
    if spec.peml.retrain_epochs >= spec.train.max_epochs:
        problems.append(("peml.retrain_epochs", f"must be below train.max_epochs ({spec.train.max_epochs}): "
                                                "at least one epoch searches before the discrete model retrains"))
    return problems


def _space_problems(spec: StudySpec, task_names: Any) -> list[tuple[str, str]]:
    """Every dimension names a hyperparameter in its range, read by some method of the
    study; ``method`` as a dimension is a choice of METHODS; ``when`` fits that choice."""
    problems: list[tuple[str, str]] = []
    search = spec.search
    methods = search.method_choices()
    if METHOD_KEY in search.space:
        problems.extend(_method_dimension_problems(search))
    for name, dim in search.space.items():
        if name == METHOD_KEY:
            continue
        path = f"search.space.{name}"
        rule = hyperparameter_rule(name, task_names)
        if rule is None:
            known = ", ".join(sorted(HYPERPARAMETERS) + [METHOD_KEY, f"{TASK_WEIGHT_PREFIX}<task>"])
            problems.append((path, f"unknown hyperparameter; known: {known}"))
            continue
        if rule["kind"] == "int" and isinstance(dim, _Uniform):
            problems.append((path, f"{name} is an integer; use type 'int' or 'choice'"))
        for value in dimension_bounds(dim):
            message = _value_problem(name, value, rule)
            if message:
                problems.append((path, message))
                break
        unused = _setting_problem(spec, name)
        if unused:
            problems.append((path, unused))
        users = methods_using(name)
        if methods is None:
            if dim.when is not None:
                problems.append((f"{path}.when", "needs 'method' as a choice in search.space (the study's method is fixed)"))
            elif spec.method not in users:
                problems.append((path, f"method {spec.method!r} does not use {name} (used by {', '.join(users)})"))
            continue
        if dim.when is not None:
            for method in dim.when.method:
                if method not in METHODS:
                    problems.append((f"{path}.when.method", f"unknown method {method!r}; choose one of {', '.join(METHODS)}"))
                elif method not in methods:
                    problems.append((f"{path}.when.method", f"{method!r} is not one of search.space.method's values {methods}"))
                elif method not in users:
                    problems.append((f"{path}.when.method", f"{method!r} does not use {name} (used by {', '.join(users)})"))
        if not any(method in users for method in methods):
            problems.append((path, f"no method of search.space.method {methods} uses {name} (used by {', '.join(users)})"))
    return problems


def _setting_problem(spec: StudySpec, name: str) -> str | None:
    """Shared hyperparameters that only a setting of the spec makes the trainer read."""
    if name == "grad_alpha" and not spec.coordination.enabled:
        return "grad_alpha (the task weights' sensitivity) is read only with coordination.enabled: true"
    if name == "sampling_temperature" and spec.train.sampling != "temperature":
        return f"sampling_temperature is read only with train.sampling: temperature (not {spec.train.sampling!r})"
    return None


def _method_dimension_problems(search: SearchSpec) -> list[tuple[str, str]]:
    path = f"search.space.{METHOD_KEY}"
    dim = search.space[METHOD_KEY]
    if not isinstance(dim, _Choice):
        return [(path, f"method is searched as a 'choice' of {', '.join(METHODS)}, not {dim.type!r}")]
    problems: list[tuple[str, str]] = []
    unknown = [value for value in dim.values if value not in METHODS]
    if unknown:
        problems.append((f"{path}.values", f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}"))
    if len(set(map(str, dim.values))) != len(dim.values):
        problems.append((f"{path}.values", "methods repeat"))
    if dim.when is not None:
        problems.append((f"{path}.when", "the method dimension itself cannot be conditional"))
    if search.algorithm == "hyperopt":
        problems.append((path, "hyperopt cannot sample a conditional space here; use algorithm 'tpe' or 'random'"))
    return problems


def check_searchable(spec: StudySpec) -> StudySpec:
    """Refuse a spec that would not search anything; called where a study is SUBMITTED.

    A study with an empty ``search.space`` would run ``num_trials`` copies of the default
    configuration: budget spent to learn nothing, most likely a forgotten ``space``. Not
    part of :func:`parse_spec`, because a spec with no space is valid elsewhere:
    ``searchsvc train`` runs one configuration of it, and benchmarks train once from it.

    Raises:
        SpecError: naming ``search.space``.
    """
    if not spec.search.space:
        raise SpecError([("search.space", "empty: a study searches at least one hyperparameter (e.g. "
                                          "lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}); to train one "
                                          "configuration use `searchsvc train SPEC --set KEY=VALUE`")])
    return spec


def hyperparameter_rule(name: str, task_names: Any) -> dict[str, Any] | None:
    """The accepted values of a trial config key, or None if the key is unknown.

    ``weight_<task>`` (a task's sampling weight) is known for every task of the study.
    ``method`` has the rule ``{"kind": "method", "values": METHODS}``: its value is a
    method's name (a string), present when the study searches ``method`` as a choice.
    """
    if name == METHOD_KEY:
        return _METHOD_RULE
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


def parse_spec(data: Any, *, paths: PathPolicy | None = None, models: ModelPolicy | None = None) -> StudySpec:
    """Validate raw spec data (a dict, or YAML/JSON text) into a :class:`StudySpec`.

    ``paths``: on a server, the operator's rules for the filesystem paths a spec may name
    (task folders, a model folder), applied before anything is read; ``None`` (the SDK,
    the CLI, a runner re-reading a stored spec) checks the paths as given. ``models``: on a
    server, resolves ``model`` (registry ids, ``study:<id>``, paths, hub ids) to what
    workers load; without it ``paths`` confines ``model`` as a path or hub id.

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
        context = {key: value for key, value in (("paths", paths), ("models", models)) if value is not None}
        return StudySpec.model_validate(data, context=context or None)
    except ValidationError as exc:
        raise SpecError(_problems_from(exc)) from None


def _load_text(text: str | bytes) -> Any:
    """YAML (a superset of JSON, so one parser reads both) without anchors and aliases: a
    few hundred bytes of nested aliases expand to gigabytes, and specs never need them."""
    import yaml

    try:
        return yaml.load(text, Loader=_no_alias_loader())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError([("<root>", _short(f"not valid YAML or JSON: {exc}"))]) from None


@functools.cache
def _no_alias_loader() -> type:
    """PyYAML's SafeLoader, refusing an alias (``*name``) where it would expand one."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("YAML aliases (*name) are not accepted in a spec")
            return super().compose_node(parent, index)

    return NoAliasLoader


def _short(message: str) -> str:
    """A message cut to a bounded length (it may quote the user's input)."""
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


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
        problems.append((_short(".".join(loc)) or "<root>", _short(message)))
    return [(path, _short(message)) for path, message in problems]

