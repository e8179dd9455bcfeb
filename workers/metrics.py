"""Task metrics, as fractions (accuracy, F1, macro F1) or correlations in [-1, 1].

Written on numpy rather than called from sklearn/scipy so that the degenerate cases a
search hits all the time (a trial that predicts one class, a regressor stuck on a
constant) give 0.0 instead of NaN or a warning: a NaN objective would poison the TPE
searcher's history, and a warning per epoch is noise.

The names match ``meta.json``'s ``metric`` field; :func:`score_task` is the one entry
the trainer uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of predictions equal to the label."""
    pred, gold = _pair(predictions, labels)
    return float(np.mean(pred == gold))


def f1_binary(predictions: ArrayLike, labels: ArrayLike, *, positive: int = 1) -> float:
    """F1 of the positive class (class index 1 by default, as GLUE's MRPC uses)."""
    pred, gold = _pair(predictions, labels)
    return _f1_of(pred, gold, positive)


def macro_f1(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Unweighted mean of per-class F1 over every class seen in labels or predictions."""
    pred, gold = _pair(predictions, labels)
    classes = np.union1d(pred, gold)
    return float(np.mean([_f1_of(pred, gold, c) for c in classes]))


def matthews_corrcoef(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation (the multi-class R_K form, equal to MCC for two classes).

    0.0 when it is undefined (all predictions, or all labels, in one class).
    """
    pred, gold = _pair(predictions, labels)
    classes, index = np.unique(np.concatenate([pred, gold]), return_inverse=True)
    k = len(classes)
    n = len(pred)
    confusion = np.zeros((k, k), dtype=np.float64)  # rows: label, columns: prediction
    np.add.at(confusion, (index[n:], index[:n]), 1.0)
    correct = np.trace(confusion)
    per_label = confusion.sum(axis=1)
    per_pred = confusion.sum(axis=0)
    numerator = correct * n - float(per_pred @ per_label)
    denominator = np.sqrt((n * n - float(per_pred @ per_pred)) * (n * n - float(per_label @ per_label)))
    if denominator == 0.0:
        return 0.0
    return float(numerator / denominator)


def pearson(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson correlation; 0.0 when either side is constant."""
    pred, gold = _pair(predictions, labels, dtype=np.float64)
    pred = pred - pred.mean()
    gold = gold - gold.mean()
    denominator = float(np.sqrt((pred @ pred) * (gold @ gold)))
    if denominator == 0.0 or not np.isfinite(denominator):
        return 0.0
    return float(np.clip((pred @ gold) / denominator, -1.0, 1.0))


def spearman(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Spearman rank correlation (ties get their average rank); 0.0 when either side is constant."""
    pred, gold = _pair(predictions, labels, dtype=np.float64)
    return pearson(_average_ranks(pred), _average_ranks(gold))


METRIC_FUNCTIONS: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "macro_f1": macro_f1,
    "matthews_corrcoef": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def score_task(metric_names: Sequence[str], predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Every named metric of one task, in the order given (the first is the primary score).

    Raises:
        ValueError: an unknown metric name, or predictions and labels of different lengths.
    """
    unknown = [name for name in metric_names if name not in METRIC_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(METRIC_FUNCTIONS)}")
    return {name: METRIC_FUNCTIONS[name](predictions, labels) for name in metric_names}


def _pair(predictions: ArrayLike, labels: ArrayLike, dtype: type | None = None) -> tuple[NDArray, NDArray]:
    pred = np.asarray(predictions, dtype=dtype).reshape(-1)
    gold = np.asarray(labels, dtype=dtype).reshape(-1)
    if pred.shape != gold.shape:
        raise ValueError(f"{pred.size} predictions for {gold.size} labels")
    if pred.size == 0:
        raise ValueError("cannot score an empty set of predictions")
    return pred, gold


def _f1_of(pred: NDArray, gold: NDArray, positive: object) -> float:
    true_pos = float(np.sum((pred == positive) & (gold == positive)))
    predicted = float(np.sum(pred == positive))
    actual = float(np.sum(gold == positive))
    if predicted + actual == 0.0:
        return 0.0
    return 2.0 * true_pos / (predicted + actual)


def _average_ranks(values: NDArray) -> NDArray:
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # Start of each run of equal values, then the mean 1-based rank of each run.
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = np.concatenate([starts[1:], [len(values)]])
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks
