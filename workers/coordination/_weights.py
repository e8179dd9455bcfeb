"""Dynamic task weights λ: more weight to the tasks whose gradients still change fast."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

_EPS = 1e-8


class DynamicTaskWeights:
    """Task loss weights ``λ = softmax(α · Δ)`` from each task's rate of gradient change.

    ``Δ_i = ‖g_i(t) − g_i(t_prev)‖ / (‖g_i(t_prev)‖ + eps)`` compares task ``i``'s gradient
    with the one it had at the previous update, relative to that previous size, and is
    smoothed by an exponential moving average (``Δ ← s·Δ + (1 − s)·Δ_now``; the first
    value seeds the average, so there is no start-up bias towards 0).

    Why: a task whose gradient still moves a lot from step to step is still learning (its
    loss surface around the shared parameters is changing); one whose gradient has
    settled has mostly converged. Weighting the fast movers up keeps the slow-to-learn
    tasks from being drowned out by the ones that are already done. ``α`` sets how
    sharply: ``α = 0`` gives uniform weights always, a large ``α`` nearly all weight to
    the fastest-moving task.

    A task whose previous gradient was exactly zero (absent from that batch) gives no
    measurement this update: its smoothed Δ stays as it was (0 if it never had one).

    Before two updates exist there is no rate to measure, and λ is uniform. The weights
    sum to 1, so with uniform λ the weighted loss is the mean of the task losses.

    Memory: the previous gradient of every task is kept (``n_tasks ×`` the shared
    gradient's size), on the gradients' own device; with ``α = 0`` nothing is kept.

    Not thread-safe; one instance belongs to one training loop.
    """

    def __init__(self, n_tasks: int, *, alpha: float, smoothing: float = 0.9) -> None:
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.n_tasks = n_tasks
        self.alpha = float(alpha)
        self.smoothing = float(smoothing)
        self._previous: list[Tensor] | None = None
        self._rates: Tensor | None = None
        self._seen = torch.zeros(n_tasks, dtype=torch.bool)
        self._weights = torch.full((n_tasks,), 1.0 / n_tasks)

    @property
    def weights(self) -> Tensor:
        """The current λ (a copy, on the CPU, float32, summing to 1)."""
        return self._weights.clone()

    @property
    def rates(self) -> Tensor | None:
        """The smoothed Δ per task, or None before two updates."""
        return None if self._rates is None else self._rates.clone()

    def update(self, grads: Sequence[Tensor]) -> Tensor:
        """Take this step's flat task gradients; return the new λ (see :attr:`weights`)."""
        if len(grads) != self.n_tasks:
            raise ValueError(f"expected {self.n_tasks} task gradients, got {len(grads)}")
        if self.alpha == 0:
            # λ is uniform whatever the rates: keeping n_tasks gradients (on the device, and
            # in every checkpoint) would buy nothing. The measuring-only coordinator is this.
            return self.weights
        current = [g.detach().clone() for g in grads]
        previous, self._previous = self._previous, current
        if previous is None:
            return self.weights
        if any(p.shape != c.shape for p, c in zip(previous, current, strict=True)):
            raise ValueError("task gradients changed shape between updates")
        now = _change_rates(previous, current)
        measured = ~now.isnan()
        if self._rates is None:
            self._rates = torch.zeros(self.n_tasks, dtype=torch.float64)
        smoothed = self.smoothing * self._rates + (1.0 - self.smoothing) * now
        fresh = measured & ~self._seen
        self._rates = torch.where(fresh, now, torch.where(measured, smoothed, self._rates))
        self._seen = self._seen | measured
        self._weights = torch.softmax(self.alpha * self._rates, dim=0).to(torch.float32)
        return self.weights

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`update` depends on, on the CPU, for a checkpoint: without it a
        resumed trial would restart from uniform λ and no longer match an uninterrupted one."""
        return {
            "previous": None if self._previous is None else [g.cpu() for g in self._previous],
            "rates": None if self._rates is None else self._rates.clone(),
            "seen": self._seen.clone(),
            "weights": self._weights.clone(),
        }

    def load_state_dict(self, state: dict[str, Any], *, device: torch.device | str | None = None) -> None:
        """Restore :meth:`state_dict`'s output; the kept gradients go to ``device`` (default CPU)."""
        previous = state["previous"]
        if previous is not None and len(previous) != self.n_tasks:
            raise ValueError(f"saved task weights are for {len(previous)} tasks, not {self.n_tasks}")
        if state["weights"].shape != (self.n_tasks,):
            raise ValueError(f"saved task weights have shape {tuple(state['weights'].shape)}, not ({self.n_tasks},)")
        self._previous = None if previous is None else [g.to(device or "cpu") for g in previous]
        self._rates = None if state["rates"] is None else state["rates"].clone()
        self._seen = state["seen"].clone()
        self._weights = state["weights"].clone()

    def reset(self) -> None:
        """Forget the history (e.g. after the shared parameters were replaced): λ uniform again."""
        self._previous = None
        self._rates = None
        self._seen = torch.zeros(self.n_tasks, dtype=torch.bool)
        self._weights = torch.full((self.n_tasks,), 1.0 / self.n_tasks)


def _change_rates(previous: Sequence[Tensor], current: Sequence[Tensor]) -> Tensor:
    """``‖g(t) − g(t_prev)‖ / (‖g(t_prev)‖ + eps)`` per task, as float64 on the CPU.

    NaN where the previous gradient was exactly zero: ``eps`` alone would turn any new
    gradient into a rate near ``1e8`` and hand that task all the weight.
    """
    rates: list[float] = []
    for p, c in zip(previous, current, strict=True):
        base = float(torch.linalg.vector_norm(p))
        rates.append(float(torch.linalg.vector_norm(c - p)) / (base + _EPS) if base > 0 else math.nan)
    return torch.tensor(rates, dtype=torch.float64)
