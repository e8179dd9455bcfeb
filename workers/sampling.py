"""Multi-task batch construction: every step draws from every task.

A task's share of a step is set by its sampling weight γ_i: ``b_i = floor(γ_i · m)`` for
batch size ``m``, then the rows left over go to the largest fractional remainders, and a
task whose share rounds to zero is lifted to one row (taken from the largest shares).
So each step holds exactly ``m`` rows and every task contributes gradient to every step,
which the gradient-coordination methods (per-task gradients per step) rely on.

γ comes from one of three strategies (``spec.train.sampling``):

- ``proportional``: γ_i ∝ w_i · n_i (n_i training rows, w_i the task's spec weight);
- ``temperature``:  γ_i ∝ (w_i · n_i)^(1/T), flattening towards small tasks as T grows;
- ``round_robin``:  equal shares for every task (weights are ignored).

An epoch is ``ceil(Σ n_i / m)`` steps: as many steps as one pass over all rows would
take, although small tasks are seen several times per epoch and large ones less than once.
Each task draws rows from its own reshuffled stream, so within a task no row repeats
until all have been seen. Everything is a function of the seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

STRATEGIES: tuple[str, ...] = ("proportional", "temperature", "round_robin")


def sampling_weights(
    strategy: str,
    sizes: Sequence[int],
    *,
    weights: Sequence[float] | None = None,
    temperature: float = 1.0,
) -> list[float]:
    """The normalised sampling weights γ (summing to 1) for a strategy.

    Raises:
        ValueError: unknown strategy, empty or non-positive sizes/weights, or T <= 0.
    """
    if not sizes:
        raise ValueError("need at least one task")
    if any(n <= 0 for n in sizes):
        raise ValueError(f"every task needs at least one training row, got sizes {list(sizes)}")
    weights = [1.0] * len(sizes) if weights is None else list(weights)
    if len(weights) != len(sizes):
        raise ValueError(f"{len(weights)} weights for {len(sizes)} tasks")
    if any(not w > 0 for w in weights):
        raise ValueError(f"task weights must be > 0, got {weights}")
    if strategy == "proportional":
        raw = [w * n for w, n in zip(weights, sizes, strict=True)]
    elif strategy == "temperature":
        if not temperature > 0:
            raise ValueError(f"sampling temperature must be > 0, got {temperature}")
        # Work in logs so that huge n_i with T near 0 cannot overflow.
        logs = [math.log(w * n) / temperature for w, n in zip(weights, sizes, strict=True)]
        top = max(logs)
        raw = [math.exp(x - top) for x in logs]
    elif strategy == "round_robin":
        raw = [1.0] * len(sizes)
    else:
        raise ValueError(f"unknown sampling strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    total = sum(raw)
    return [r / total for r in raw]


def batch_shares(gammas: Sequence[float], batch_size: int) -> list[int]:
    """Rows per task in one step: floor(γ_i·m), remainders to the largest fractions, each >= 1.

    Ties go to the earlier task, so the result is a pure function of its inputs.

    Raises:
        ValueError: the batch is smaller than the number of tasks.
    """
    k = len(gammas)
    if batch_size < k:
        raise ValueError(f"batch_size {batch_size} is smaller than the number of tasks ({k}); every task needs a row per step")
    quotas = [g * batch_size for g in gammas]
    shares = [max(1, math.floor(q)) for q in quotas]
    while sum(shares) < batch_size:  # hand out the remainder by largest fraction left
        best = max(range(k), key=lambda i: (quotas[i] - shares[i], -i))
        shares[best] += 1
    while sum(shares) > batch_size:  # lifting tasks to one row overshot: take from the most over-served
        candidates = [i for i in range(k) if shares[i] > 1]
        worst = max(candidates, key=lambda i: (shares[i] - quotas[i], shares[i], -i))
        shares[worst] -= 1
    return shares


class MultiTaskSampler:
    """Yields, step by step, which rows of each task make up the batch.

    ``epoch()`` returns one epoch's steps; each step is a list with one index array per
    task (length ``shares[i]``). Streams continue across epochs, so epoch 2 picks up where
    epoch 1 left each task's shuffled order.
    """

    def __init__(self, sizes: Sequence[int], *, batch_size: int, gammas: Sequence[float], seed: int) -> None:
        if len(gammas) != len(sizes):
            raise ValueError(f"{len(gammas)} sampling weights for {len(sizes)} tasks")
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.shares = batch_shares(gammas, batch_size)
        self.steps_per_epoch = math.ceil(sum(self.sizes) / batch_size)
        self._streams = [_Stream(n, np.random.default_rng([seed, i])) for i, n in enumerate(self.sizes)]

    def epoch(self) -> Iterator[list[NDArray[np.int64]]]:
        """The steps of the next epoch."""
        for _ in range(self.steps_per_epoch):
            yield [stream.take(share) for stream, share in zip(self._streams, self.shares, strict=True)]


class _Stream:
    """An endless sequence of row indices: a permutation, then a fresh one, and so on."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self._size = size
        self._rng = rng
        self._order = rng.permutation(size)
        self._pos = 0

    def take(self, count: int) -> NDArray[np.int64]:
        out: list[NDArray[np.int64]] = []
        while count > 0:
            if self._pos == self._size:
                self._order = self._rng.permutation(self._size)
                self._pos = 0
            chunk = self._order[self._pos : self._pos + count]
            self._pos += len(chunk)
            count -= len(chunk)
            out.append(chunk)
        return np.concatenate(out).astype(np.int64)
