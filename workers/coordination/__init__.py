"""Gradient coordination across tasks (DESIGN.md, "Gradient coordination (α/λ weighting)").

Multi-task training sums the tasks' gradients over shared parameters; where two tasks
pull in opposite directions, one improves at the other's expense. This package:

* measures that conflict (:func:`conflict_score`, :func:`conflict_fraction`),
* removes it by projection (:func:`project_conflicts`, PCGrad),
* weights the tasks by how fast their gradients still change (:class:`DynamicTaskWeights`),
* optionally regularizes similar tasks' representations together
  (:func:`task_similarity`, :func:`similarity_penalty`, passed as the ``extra`` term),
* and ties it into one training step (:class:`GradientCoordinator`), whose per-step
  :class:`StepStats` an :class:`EpochAccumulator` turns into report metrics.

Typical use in a training step::

    coordinator = coordinator_from_spec(spec.coordination, shared, len(tasks), grad_alpha=config["grad_alpha"])
    ...
    stats = coordinator.backward(task_losses, extra=model.regularization())
    epoch_stats.add(stats)
"""

from workers.coordination._conflict import conflict_fraction, conflict_score, project_conflicts
from workers.coordination._coordinator import GradientCoordinator, coordinator_from_spec
from workers.coordination._similarity import similarity_penalty, task_similarity
from workers.coordination._stats import EpochAccumulator, StepStats
from workers.coordination._weights import DynamicTaskWeights

__all__ = [
    "DynamicTaskWeights",
    "EpochAccumulator",
    "GradientCoordinator",
    "StepStats",
    "conflict_fraction",
    "conflict_score",
    "coordinator_from_spec",
    "project_conflicts",
    "similarity_penalty",
    "task_similarity",
]
