"""What one coordinated step measured, and its mean over an epoch for the trial report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class StepStats:
    """One training step as the coordinator saw it.

    The conflict numbers exist only on coordinated steps (the cheap steps in between
    never compute per-task gradients), so they are None otherwise. ``weights`` is the λ
    the step used, one per task, summing to 1.
    """

    coordinated: bool
    conflict_before: float | None
    conflict_after: float | None
    conflict_fraction: float | None
    weights: list[float]

    def __post_init__(self) -> None:
        measured = (self.conflict_before, self.conflict_after, self.conflict_fraction)
        if self.coordinated and any(value is None for value in measured):
            raise ValueError("a coordinated step must carry its conflict measurements")
        if not self.coordinated and any(value is not None for value in measured):
            raise ValueError("a plain step measures no conflict")
        if not self.weights:
            raise ValueError("a step needs at least one task weight")

    @classmethod
    def plain(cls, weights: Sequence[float]) -> StepStats:
        """A step that took the cheap path: weights only, no conflict measured."""
        return cls(coordinated=False, conflict_before=None, conflict_after=None, conflict_fraction=None, weights=list(weights))


class EpochAccumulator:
    """Averages :class:`StepStats` over an epoch into the metrics of a trial report.

    ``result()`` gives ``grad_conflict`` (mean conflict score before projection),
    ``grad_conflict_after`` and ``grad_conflict_fraction`` over the coordinated steps,
    and ``task_weight/<task>`` (mean λ) over all steps. Keys with nothing to average
    (no coordinated step yet) are left out rather than written as NaN, which JSON lacks.
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        names = list(task_names)
        if not names:
            raise ValueError("need at least one task name")
        if len(set(names)) != len(names):
            raise ValueError(f"task names repeat: {names}")
        self.task_names = names
        self.reset()

    def reset(self) -> None:
        """Start a new epoch."""
        self.steps = 0
        self.coordinated_steps = 0
        self._conflict = [0.0, 0.0, 0.0]
        self._weights = [0.0] * len(self.task_names)

    def add(self, stats: StepStats) -> None:
        """Count one step."""
        if len(stats.weights) != len(self.task_names):
            raise ValueError(f"expected {len(self.task_names)} task weights, got {len(stats.weights)}")
        self.steps += 1
        self._weights = [total + w for total, w in zip(self._weights, stats.weights, strict=True)]
        if stats.coordinated:
            assert stats.conflict_before is not None and stats.conflict_after is not None and stats.conflict_fraction is not None
            self.coordinated_steps += 1
            measured = (stats.conflict_before, stats.conflict_after, stats.conflict_fraction)
            self._conflict = [total + value for total, value in zip(self._conflict, measured, strict=True)]

    def result(self) -> dict[str, float]:
        """The epoch's means, JSON-ready (plain finite floats)."""
        out: dict[str, float] = {}
        if self.coordinated_steps:
            before, after, fraction = (total / self.coordinated_steps for total in self._conflict)
            out.update(grad_conflict=before, grad_conflict_after=after, grad_conflict_fraction=fraction)
        if self.steps:
            for name, total in zip(self.task_names, self._weights, strict=True):
                out[f"task_weight/{name}"] = total / self.steps
        return {key: value for key, value in out.items() if math.isfinite(value)}
