"""Putting the tasks' losses on one scale before they are summed (``train.loss_balance``).

A multi-task step sums losses of different kinds: a regression MSE on a [0, 1] scale is
~0.03 once a model is decent, a cross-entropy ~0.5, and the plain mean hands each task a
share of the shared gradient in proportion to those accidents of units. With ``rms``
every task's loss is divided by the square root of its own running mean:

    L̃_i = w_i · L_i,   w_i ∝ 1 / sqrt(EMA(L_i)),   mean_i(w_i) = 1

For an MSE that makes the gradient per row ``2·r/rms(r)``, of order 1 whatever the label's
unit (the loss behaves like an RMSE); a cross-entropy near chance is barely changed
(sqrt(ln 2) ≈ 0.83). The weights are constants in the backward pass (the EMA is of
detached values), so this re-weights the tasks and never changes a task's own optimum.
The EMA is bias-corrected, so at the first step each task's weight uses its own loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

DECAY = 0.95  # about 20 steps of memory: follows a loss that falls within an epoch
FLOOR = 1e-8  # a task with zero loss keeps a finite weight


class LossBalancer:
    """Re-weights a step's task losses (module docstring); ``mode`` is ``rms`` or ``none``."""

    def __init__(self, num_tasks: int, *, mode: str = "rms", decay: float = DECAY) -> None:
        if mode not in ("rms", "none"):
            raise ValueError(f"loss_balance must be 'rms' or 'none', got {mode!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.mode = mode
        self.decay = decay
        self._ema = [0.0] * num_tasks
        self._steps = 0

    def weights(self) -> list[float]:
        """The current weights (mean 1); all 1 before the first step or with ``none``."""
        if self.mode == "none" or self._steps == 0:
            return [1.0] * len(self._ema)
        correction = 1.0 - self.decay**self._steps
        raw = [1.0 / math.sqrt(max(e / correction, FLOOR)) for e in self._ema]
        total = sum(raw)
        return [len(raw) * w / total for w in raw]

    def __call__(self, losses: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Update the running means with this step's losses, then return the weighted losses."""
        if self.mode == "none":
            return list(losses)
        if len(losses) != len(self._ema):
            raise ValueError(f"expected {len(self._ema)} task losses, got {len(losses)}")
        for i, loss in enumerate(losses):
            value = float(loss.detach())
            if math.isfinite(value):
                self._ema[i] = self.decay * self._ema[i] + (1.0 - self.decay) * value
        self._steps += 1
        return [loss * w for loss, w in zip(losses, self.weights(), strict=True)]

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "ema": list(self._ema), "steps": self._steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["ema"]) != len(self._ema):
            raise ValueError(f"balancer state for {len(state['ema'])} tasks, this trial has {len(self._ema)}")
        self._ema = [float(v) for v in state["ema"]]
        self._steps = int(state["steps"])
