"""Task data: read a task folder (``train.jsonl``, ``dev.jsonl``, ``meta.json``) into examples.

Every GLUE / SuperGLUE shape in ``shared/data`` is reduced to the one form an encoder
with a head needs: a first text, an optional second text and a numeric label (a class
index, or a float for regression). Reducing early means the tokenizer, the sampler and
the trainer never learn about COPA or WiC; adding a task shape touches this module only.

The shape is detected from the keys of the first record (see :data:`SHAPES`), and every
later record must carry the same keys. Errors name the file and line, because a broken
row is usually found by someone who has the file open in an editor.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from searchsvc.spec import SUBSETS, StudySpec, TaskSpec
from workers.text2text.verbalize import Verbalizer

METRICS: tuple[str, ...] = ("accuracy", "f1", "macro_f1", "matthews_corrcoef", "pearson", "spearman")
LABEL_TYPES: tuple[str, ...] = ("int", "str", "bool", "float")

# Shape name -> the keys that identify it, checked in this order (COPA also has a
# "question" key, so it must be tried before BoolQ).
SHAPES: tuple[tuple[str, frozenset[str]], ...] = (
    ("copa", frozenset({"premise", "choice1", "choice2", "question"})),
    ("wic", frozenset({"word", "sentence1", "sentence2"})),
    ("boolq", frozenset({"question", "passage"})),
    ("pair", frozenset({"text_a", "text_b"})),
    ("single", frozenset({"text"})),
)

_SHAPE_KEYS: dict[str, frozenset[str]] = dict(SHAPES)

TaskKind = Literal["classification", "regression"]


@dataclass(frozen=True)
class Example:
    """One row reduced to encoder input: ``text_b`` is None for single-sentence tasks."""

    text_a: str
    text_b: str | None
    label: float | int


@dataclass(frozen=True)
class TaskInfo:
    """Everything about a task except its rows: what a model, a checkpoint or a predictor needs.

    ``verbalizer`` is the meta file's optional ``{label: text}`` override (text-to-text
    models); ``label_type`` is the meta's (or inferred) type of the label values.
    """

    name: str
    kind: TaskKind
    labels: tuple[Any, ...]
    metrics: tuple[str, ...]
    shape: str
    label_type: str
    verbalizer: dict[str, str] | None = None

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    def make_verbalizer(self) -> Verbalizer:
        """The label texts a text-to-text model writes for this task."""
        return Verbalizer.for_task(self.kind, self.labels, label_type=self.label_type, override=self.verbalizer)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "labels": list(self.labels),
            "metrics": list(self.metrics),
            "shape": self.shape,
            "label_type": self.label_type,
            "verbalizer": None if self.verbalizer is None else dict(self.verbalizer),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, name: str | None = None) -> TaskInfo:
        kind = data["kind"]
        if kind not in ("classification", "regression"):
            raise ValueError(f"unknown task kind {kind!r}")
        labels = tuple(data["labels"])
        return cls(
            name=str(name if name is not None else data["name"]),
            kind=kind,
            labels=labels,
            metrics=tuple(data.get("metrics", ())),
            shape=str(data.get("shape", "pair")),
            label_type=str(data.get("label_type") or _infer_label_type(labels)),
            verbalizer=data.get("verbalizer"),
        )


@dataclass(frozen=True)
class TaskData:
    """A loaded task: its examples and what is needed to build its head and score it.

    ``labels`` are the meta's label values in class-index order (classification), or the
    ``[low, high]`` range (regression). ``metrics[0]`` is the task's primary score.
    """

    name: str
    kind: TaskKind
    labels: tuple[Any, ...]
    metrics: tuple[str, ...]
    shape: str
    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    label_type: str | None = None
    verbalizer: dict[str, str] | None = None

    @property
    def info(self) -> TaskInfo:
        """The task without its rows."""
        return TaskInfo(
            name=self.name,
            kind=self.kind,
            labels=self.labels,
            metrics=self.metrics,
            shape=self.shape,
            label_type=self.label_type or _infer_label_type(self.labels),
            verbalizer=self.verbalizer,
        )

    @property
    def num_outputs(self) -> int:
        """Width of the task head: one per class, or one for regression."""
        return 1 if self.kind == "regression" else len(self.labels)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def label_range(self) -> tuple[float, float] | None:
        """``(low, high)`` for regression, None for classification."""
        if self.kind != "regression":
            return None
        return float(self.labels[0]), float(self.labels[1])


def load_spec_tasks(spec: StudySpec) -> list[TaskData]:
    """Load every task of a study, applying the spec's per-task row limits."""
    return [
        load_task(
            task,
            max_train=spec.train.max_train_examples,
            max_dev=spec.train.max_dev_examples,
            subset=spec.train.subset,
            subset_seed=spec.train.subset_seed,
        )
        for task in spec.tasks
    ]


def load_task(
    task: TaskSpec,
    *,
    max_train: int | None = None,
    max_dev: int | None = None,
    subset: str = "random",
    subset_seed: int = 0,
) -> TaskData:
    """Load one task folder; ``max_train`` / ``max_dev`` keep N rows of each split.

    ``subset="random"`` keeps a uniform sample, fixed by ``subset_seed`` and the task and
    split names (so every trial of a study sees the same rows), in the file's order.
    Data files are often sorted (GLUE's STS-B lists all its captions before its news), so
    the first rows can be a different distribution from the rest; ``"first"`` keeps them
    anyway, and reads no further.

    Raises:
        ValueError: the meta file or a row is malformed (the message names file and line).
    """
    if task.path is None:  # the service fills a dataset's folder in at submission
        raise ValueError(f"task {task.name!r} has no folder (a dataset the service did not resolve)")
    folder = Path(task.path)
    header = _read_header(folder)
    if subset not in SUBSETS:
        raise ValueError(f"subset must be {' or '.join(map(repr, SUBSETS))}, got {subset!r}")

    def pick(split: str, limit: int | None) -> RowPicker:
        return RowPicker(limit, None if subset == "first" else random.Random(f"{subset_seed}/{task.name}/{split}"))

    train_picker, dev_picker = pick("train", max_train), pick("dev", max_dev)
    shape = _read_splits(folder, header.encoder, train_picker, dev_picker)
    return TaskData(
        name=task.name,
        kind=header.kind,
        labels=tuple(header.labels),
        metrics=header.metrics,
        shape=shape,
        train=tuple(train_picker.rows()),
        dev=tuple(dev_picker.rows()),
        label_type=header.label_type,
        verbalizer=header.verbalizer,
    )


@dataclass(frozen=True)
class FolderCheck:
    """What :func:`check_task_folder` found: the rows of each split and the task's shape."""

    train_rows: int
    dev_rows: int
    shape: str
    kind: TaskKind


def check_task_folder(folder: Path) -> FolderCheck:
    """Run every check :func:`load_task` makes on a task folder, over every row, keeping
    none in memory (an uploaded dataset is checked once, whole, before it is stored).

    Raises:
        ValueError: as :func:`load_task` does (the message names file and line).
    """
    header = _read_header(folder)
    train, dev = RowPicker(0, random.Random(0)), RowPicker(0, random.Random(0))  # keep none, count all
    shape = _read_splits(folder, header.encoder, train, dev)
    return FolderCheck(train_rows=train.seen, dev_rows=dev.seen, shape=shape, kind=header.kind)


@dataclass(frozen=True)
class _Header:
    """A task folder's meta.json, checked: what the rows are read and encoded against."""

    kind: TaskKind
    labels: list[Any]
    label_type: str
    metrics: tuple[str, ...]
    verbalizer: dict[str, str] | None
    encoder: _LabelEncoder


def _read_header(folder: Path) -> _Header:
    meta_path = folder / "meta.json"
    meta = _read_meta(meta_path)
    kind, labels, label_type = _labels_from_meta(meta, meta_path)
    metrics = _metrics_from_meta(meta, meta_path, kind)
    verbalizer = _verbalizer_from_meta(meta, meta_path, kind, labels, label_type)
    return _Header(kind, labels, label_type, metrics, verbalizer, _LabelEncoder(kind, labels, label_type))


def _read_splits(folder: Path, encoder: _LabelEncoder, train: RowPicker, dev: RowPicker) -> str:
    """Read both splits into their pickers; returns the shape. Each split needs a row, and
    both splits the same shape."""
    _, shape = _read_split(folder / "train.jsonl", encoder, train)
    _, dev_shape = _read_split(folder / "dev.jsonl", encoder, dev)
    if not train.seen:
        raise ValueError(f"{folder / 'train.jsonl'}: no rows")
    if not dev.seen:
        raise ValueError(f"{folder / 'dev.jsonl'}: no rows")
    if dev_shape != shape:
        raise ValueError(f"{folder}: train rows look like {shape!r} but dev rows like {dev_shape!r}")
    return shape


def detect_shape(record: dict[str, Any]) -> str:
    """The shape name of a record, from its keys (see :data:`SHAPES`).

    Raises:
        ValueError: no known shape matches.
    """
    keys = set(record)
    for name, required in SHAPES:
        if required <= keys:
            return name
    known = "; ".join(f"{name}: {sorted(req)}" for name, req in SHAPES)
    raise ValueError(f"record keys {sorted(keys)} match no known task shape ({known})")


def to_texts(shape: str, record: dict[str, Any]) -> tuple[str, str | None]:
    """Reduce a record of a known shape to ``(text_a, text_b)``.

    COPA becomes ``premise + "What was the cause/effect?"`` paired with both choices, so a
    two-way head picks the choice; WiC puts the target word in front of both sentences (so
each text says which word is meant when a bi-encoder reads it alone).
    """
    if shape == "single":
        return _text(record, "text"), None
    if shape == "pair":
        return _text(record, "text_a"), _text(record, "text_b")
    if shape == "boolq":
        return _text(record, "question"), _text(record, "passage")
    if shape == "copa":
        question = _text(record, "question")
        if question not in ("cause", "effect"):
            raise ValueError(f"COPA question must be 'cause' or 'effect', got {question!r}")
        premise = _text(record, "premise")
        return f"{premise} What was the {question}?", f"{_text(record, 'choice1')} / {_text(record, 'choice2')}"
    if shape == "wic":
        word = _text(record, "word")
        return f"{word}: {_text(record, 'sentence1')}", f"{word}: {_text(record, 'sentence2')}"
    raise ValueError(f"unknown shape {shape!r}")


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read meta: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: meta must be a JSON object")
    return meta


def _labels_from_meta(meta: dict[str, Any], path: Path) -> tuple[TaskKind, list[Any], str]:
    labels = meta.get("labels")
    if not isinstance(labels, list) or not labels:
        raise ValueError(f"{path}: 'labels' must be a non-empty list")
    label_type = meta.get("label_type") or _infer_label_type(labels)
    if label_type not in LABEL_TYPES:
        raise ValueError(f"{path}: label_type {label_type!r} is not one of {', '.join(LABEL_TYPES)}")
    if label_type == "float":
        if len(labels) != 2 or not all(_is_number(v) for v in labels) or not labels[0] < labels[1]:
            raise ValueError(f"{path}: a float task's 'labels' must be the range [low, high], got {labels!r}")
        return "regression", [float(v) for v in labels], label_type
    if len(labels) < 2:
        raise ValueError(f"{path}: a classification task needs at least 2 labels, got {labels!r}")
    for value in labels:
        if not _has_label_type(value, label_type):
            raise ValueError(f"{path}: label {value!r} is not of label_type {label_type!r}")
    if len({repr(v) for v in labels}) != len(labels):
        raise ValueError(f"{path}: duplicate values in 'labels' {labels!r}")
    return "classification", list(labels), label_type


def _infer_label_type(labels: Sequence[Any]) -> str:
    for name in ("bool", "int", "str"):
        if all(_has_label_type(v, name) for v in labels):
            return name
    return "float"


def _metrics_from_meta(meta: dict[str, Any], path: Path, kind: TaskKind) -> tuple[str, ...]:
    raw = meta.get("metric")
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: 'metric' must be a metric name or a non-empty list of names")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"{path}: unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    correlation = {"pearson", "spearman"}
    if kind == "regression" and not set(names) <= correlation:
        raise ValueError(f"{path}: a regression task takes pearson/spearman metrics, got {names}")
    if kind == "classification" and set(names) & correlation:
        raise ValueError(f"{path}: pearson/spearman need a float (regression) task, got {names}")
    return tuple(dict.fromkeys(names))


def _verbalizer_from_meta(
    meta: dict[str, Any], path: Path, kind: TaskKind, labels: list[Any], label_type: str
) -> dict[str, str] | None:
    """The optional ``"verbalizer": {label: text}`` of a meta file, checked against the labels."""
    raw = meta.get("verbalizer")
    try:
        if raw is not None and not isinstance(raw, dict):
            raise ValueError("'verbalizer' must be an object mapping labels to texts")
        Verbalizer.for_task(kind, labels, label_type=label_type, override=raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return None if raw is None else dict(raw)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _has_label_type(value: Any, label_type: str) -> bool:
    if label_type == "bool":
        return isinstance(value, bool)
    if label_type == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if label_type == "str":
        return isinstance(value, str)
    return _is_number(value)


class _LabelEncoder:
    """Turns a raw label into a class index (classification) or a checked float (regression)."""

    def __init__(self, kind: TaskKind, labels: list[Any], label_type: str) -> None:
        self.kind = kind
        self.labels = labels
        self.label_type = label_type
        # repr() keys keep True and 1 apart, which a plain dict would merge.
        self._index = {repr(v): i for i, v in enumerate(labels)}

    def encode(self, value: Any) -> int | float:
        if self.kind == "regression":
            if not _is_number(value):
                raise ValueError(f"label must be a number, got {value!r}")
            low, high = self.labels
            if not low <= value <= high:
                raise ValueError(f"label {value!r} is outside the range [{low}, {high}] given in meta.json")
            return float(value)
        if not _has_label_type(value, self.label_type):
            raise ValueError(f"label {value!r} is not of label_type {self.label_type!r}")
        try:
            return self._index[repr(value)]
        except KeyError:
            raise ValueError(f"label {value!r} is not among the meta labels {self.labels!r}") from None


class RowPicker:
    """Keeps at most ``limit`` rows of a split read once, front to back: the first ones
    (``rng`` None), or a uniform sample (reservoir sampling: memory for ``limit`` rows
    whatever the file's length) returned in the file's order."""

    def __init__(self, limit: int | None, rng: random.Random | None) -> None:
        self.limit = limit
        self.rng = rng
        self._kept: list[tuple[int, Example]] = []
        self._seen = 0

    @property
    def seen(self) -> int:
        """How many rows were offered (kept or not)."""
        return self._seen

    @property
    def full(self) -> bool:
        """True when no later row can be kept (the first-rows picker has its ``limit``)."""
        return self.rng is None and self.limit is not None and len(self._kept) >= self.limit

    def offer(self, example: Example) -> None:
        index, self._seen = self._seen, self._seen + 1
        if self.limit is None or len(self._kept) < self.limit:
            self._kept.append((index, example))
        elif self.rng is not None:
            slot = self.rng.randrange(index + 1)
            if slot < self.limit:
                self._kept[slot] = (index, example)

    def rows(self) -> list[Example]:
        return [example for _, example in sorted(self._kept, key=lambda kept: kept[0])]


def _read_split(path: Path, encoder: _LabelEncoder, picker: RowPicker) -> tuple[list[Example], str]:
    shape = ""
    for line_no, record in _records(path):
        try:
            if not shape:
                shape = detect_shape(record)
            elif not _SHAPE_KEYS[shape] <= set(record):
                raise ValueError(f"record keys {sorted(record)} do not match the file's shape {shape!r}")
            if "label" not in record:
                raise ValueError("record has no 'label'")
            text_a, text_b = to_texts(shape, record)
            label = encoder.encode(record["label"])
        except ValueError as exc:
            raise ValueError(f"{path}, line {line_no}: {exc}") from None
        picker.offer(Example(text_a=text_a, text_b=text_b, label=label))
        if picker.full:
            break  # rows past the first ones are neither read nor checked
    return picker.rows(), shape


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    with handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {line_no}: not valid JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {line_no}: expected a JSON object, got {type(record).__name__}")
            yield line_no, record
