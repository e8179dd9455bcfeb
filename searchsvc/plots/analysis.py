"""The numbers behind the plots, apart from the drawing so tests can check them by hand.

Importance is deliberately simple and explainable, not fANOVA: for a numeric
hyperparameter, ``|Spearman rho|`` between its values and the trials' best objectives
(monotone relations score 1, whichever direction); for a categorical one, the correlation
ratio ``eta`` of the objectives' ranks over its categories (0 when every category has the
same mean rank, 1 when the trials of each category tie). With a handful of trials any importance is noise; the plot says how many
trials it rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from searchsvc.plots.data import StudyData

MIN_TRIALS_FOR_IMPORTANCE = 3


def running_best(values: list[float | None], *, mode: str) -> list[float | None]:
    """The best value seen up to each position (None until the first value)."""
    out: list[float | None] = []
    best: float | None = None
    for value in values:
        if value is not None and (best is None or (value > best if mode == "max" else value < best)):
            best = value
        out.append(best)
    return out


def hyperparameters(data: StudyData) -> list[str]:
    """The searched hyperparameters, in the space's order (else every config key that varies)."""
    configs = [t.config for t in data.trials]
    names = [name for name in data.space if any(name in c for c in configs)]
    if names:
        return names
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({_hashable(c.get(k)) for c in configs}) > 1]


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, list | dict) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))


@dataclass(frozen=True)
class Importance:
    name: str
    score: float  # in [0, 1]
    how: str  # "spearman" or "eta"


def importance(data: StudyData) -> tuple[list[Importance], int]:
    """Per hyperparameter, how strongly it goes with the objective, strongest first; and the
    number of trials used (those with an objective). Empty below MIN_TRIALS_FOR_IMPORTANCE."""
    scored = [t for t in data.trials if t.best_objective is not None]
    if len(scored) < MIN_TRIALS_FOR_IMPORTANCE:
        return [], len(scored)
    y = [float(t.best_objective) for t in scored]  # type: ignore[arg-type]
    out = []
    for name in hyperparameters(data):
        pairs = [(t.config.get(name), value) for t, value in zip(scored, y, strict=True) if name in t.config]
        if len(pairs) < MIN_TRIALS_FOR_IMPORTANCE:
            continue
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        if all(_is_number(x) for x in xs):
            out.append(Importance(name, abs(spearman([float(x) for x in xs if x is not None], ys)), "spearman"))
        else:
            out.append(Importance(name, correlation_ratio([_hashable(x) for x in xs], ys), "eta"))
    out.sort(key=lambda imp: (-imp.score, imp.name))
    return out, len(scored)


def ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties getting their average rank (as scipy.stats.rankdata)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    sa = math.sqrt(sum((x - ma) ** 2 for x in a))
    sb = math.sqrt(sum((x - mb) ** 2 for x in b))
    if sa == 0 or sb == 0:
        return 0.0  # a constant says nothing about the other
    return sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True)) / (sa * sb)


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: the Pearson correlation of the ranks (0 if either side is constant)."""
    return _pearson(ranks([float(v) for v in x]), ranks(y))


def correlation_ratio(categories: list[Any], y: list[float]) -> float:
    """eta = sqrt(between-category variance / total variance) of the ranks of ``y``."""
    r = ranks(y)
    mean = sum(r) / len(r)
    total = sum((v - mean) ** 2 for v in r)
    if total == 0:
        return 0.0
    groups: dict[Any, list[float]] = {}
    for category, value in zip(categories, r, strict=True):
        groups.setdefault(category, []).append(value)
    between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups.values())
    return math.sqrt(between / total)


@dataclass(frozen=True)
class Axis:
    """One parallel-coordinates axis: each trial's position in [0, 1] and the tick labels."""

    name: str
    positions: list[float | None]  # per trial, None where the trial lacks the value
    ticks: list[tuple[float, str]]


def parallel_axis(name: str, values: list[Any], dim: dict[str, Any] | None) -> Axis:
    """Numeric values scale linearly (log10 for log dimensions) from min to max; anything
    else (and a ``choice``) is categorical, spread evenly in the order the space lists it."""
    dim = dim or {}
    present = [v for v in values if v is not None]
    numeric = present and all(_is_number(v) for v in present) and dim.get("type") != "choice"
    if not numeric:
        order = [_hashable(v) for v in dim.get("values", [])] if dim.get("type") == "choice" else []
        for v in present:
            if _hashable(v) not in order:
                order.append(_hashable(v))
        span = max(len(order) - 1, 1)
        positions = [None if v is None else order.index(_hashable(v)) / span for v in values]
        if len(order) == 1:
            positions = [None if p is None else 0.5 for p in positions]
        ticks = [(i / span if len(order) > 1 else 0.5, str(c)) for i, c in enumerate(order)]
        return Axis(name, positions, ticks)
    log = dim.get("type") == "loguniform" or bool(dim.get("log"))
    log = log and all(float(v) > 0 for v in present)

    def scale(v: float) -> float:
        return math.log10(v) if log else v

    low = float(dim["low"]) if _is_number(dim.get("low")) else min(float(v) for v in present)
    high = float(dim["high"]) if _is_number(dim.get("high")) else max(float(v) for v in present)
    low, high = min([low, *map(float, present)]), max([high, *map(float, present)])
    lo, hi = scale(low), scale(high)
    width = hi - lo

    def position(v: Any) -> float | None:
        if v is None:
            return None
        return 0.5 if width == 0 else (scale(float(v)) - lo) / width

    ticks = [(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")] if width else [(0.5, f"{low:.3g}")]
    return Axis(name, [position(v) for v in values], ticks)
