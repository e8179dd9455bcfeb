"""Verbalizers: the text a text-to-text model writes for each label, and back.

A classification task gets one text per class; a regression task gets *bins* over its
label range (``0.0, 0.5, ..., 5.0`` for STS-B), each written as a number. Training writes
the text of the row's class, or of the bin nearest to its value; prediction scores every
text and takes the argmax (classification) or the probability-weighted mean of the bin
values (regression), so a regression prediction is a float anywhere in the range (that
decoding lives in :mod:`workers.text2text.scoring`).

Texts come from the task's ``meta.json`` ``"verbalizer": {label: text}`` when given, else
from defaults: booleans and 0/1 integers read "no"/"yes", ``entailment``/``not_entailment``
read "yes"/"no", and any other label is its own text. Nothing here imports torch, so
:mod:`workers.data` validates a verbalizer while it reads the meta file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REGRESSION_BINS = 11

_ENTAILMENT = {"entailment": "yes", "not_entailment": "no"}


def label_key(value: Any) -> str:
    """How a label value is written as a JSON object key: ``json.dumps`` unless it is a string."""
    return value if isinstance(value, str) else json.dumps(value)


def class_texts(labels: Sequence[Any], label_type: str | None, override: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """One text per class label, in label order.

    ``override`` maps labels to texts; its keys may be written ``"1"``, ``"true"`` or
    ``"True"`` for non-string labels. It must cover every label.

    Raises:
        ValueError: an override misses a label, has unknown keys, or texts are empty or repeat.
    """
    if override is not None:
        texts = _texts_from_override(labels, override)
    elif label_type == "bool" or all(isinstance(v, bool) for v in labels):
        texts = ["yes" if v else "no" for v in labels]
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in labels) and set(labels) == {0, 1}:
        texts = ["yes" if v == 1 else "no" for v in labels]
    elif set(map(str, labels)) == set(_ENTAILMENT):
        texts = [_ENTAILMENT[str(v)] for v in labels]
    else:
        texts = [str(v) for v in labels]
    if any(not t.strip() for t in texts):
        raise ValueError(f"verbalizer texts must not be empty, got {texts!r}")
    if len(set(texts)) != len(texts):
        raise ValueError(f"verbalizer texts repeat ({texts!r}); give distinct texts in meta.json 'verbalizer'")
    return tuple(texts)


def _texts_from_override(labels: Sequence[Any], override: Mapping[str, str]) -> list[str]:
    if not isinstance(override, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in override.items()):
        raise ValueError("'verbalizer' must be an object mapping labels to texts")
    spellings = {k: k for k in override}
    spellings.update({k.lower(): k for k in override})
    texts, used = [], set()
    for value in labels:
        candidates = [label_key(value), str(value)]
        if isinstance(value, bool):
            candidates.append(str(value).lower())
        key = next((spellings[c] for c in candidates if c in spellings), None)
        if key is None:
            raise ValueError(f"'verbalizer' has no text for label {value!r}")
        used.add(key)
        texts.append(override[key])
    unknown = sorted(set(override) - used)
    if unknown:
        raise ValueError(f"'verbalizer' keys {unknown} are not labels of the task")
    return texts


def regression_bins(low: float, high: float, count: int = REGRESSION_BINS) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """``count`` evenly spaced values over ``[low, high]`` and their texts (fewest decimals that are exact)."""
    if not low < high or count < 2:
        raise ValueError(f"need low < high and at least 2 bins, got [{low}, {high}] and {count}")
    step = (high - low) / (count - 1)
    values = tuple(low + i * step for i in range(count))
    tolerance = 1e-9 * max(1.0, abs(low), abs(high))
    for decimals in range(10):
        texts = tuple(f"{v:.{decimals}f}" for v in values)
        if len(set(texts)) == count and all(abs(float(t) - v) <= tolerance for t, v in zip(texts, values, strict=True)):
            return values, texts
    return values, tuple(f"{v:.9g}" for v in values)


@dataclass(frozen=True)
class Verbalizer:
    """The candidate texts of a task and how scores over them become a prediction.

    ``values`` are the bin values (regression) and empty for classification.
    """

    kind: str
    texts: tuple[str, ...]
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "regression"):
            raise ValueError(f"unknown task kind {self.kind!r}")
        if len(self.texts) < 2:
            raise ValueError("a verbalizer needs at least two texts")
        if self.kind == "regression" and len(self.values) != len(self.texts):
            raise ValueError("a regression verbalizer needs one value per text")

    @classmethod
    def for_task(
        cls, kind: str, labels: Sequence[Any], *, label_type: str | None = None, override: Mapping[str, str] | None = None
    ) -> Verbalizer:
        """The verbalizer of a task from its kind and meta labels (``[low, high]`` for regression)."""
        if kind == "regression":
            if override is not None:
                raise ValueError("a float (regression) task is verbalized by bins; 'verbalizer' applies to classification tasks")
            values, texts = regression_bins(float(labels[0]), float(labels[1]))
            return cls(kind=kind, texts=texts, values=values)
        return cls(kind=kind, texts=class_texts(labels, label_type, override))

    def target(self, label: float) -> int:
        """The index of the text to train on: the class index, or the bin nearest to the value."""
        if self.kind == "classification":
            index = int(label)
            if not 0 <= index < len(self.texts):
                raise ValueError(f"class index {label!r} out of range for {len(self.texts)} classes")
            return index
        return min(range(len(self.values)), key=lambda i: (abs(self.values[i] - float(label)), i))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "texts": list(self.texts), "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verbalizer:
        return cls(kind=str(data["kind"]), texts=tuple(data["texts"]), values=tuple(float(v) for v in data.get("values", ())))
