"""Prefix generators: modules that produce a key/value prefix for every attention layer.

This module only *produces* tensors; :mod:`workers.injection` puts them into attention.
The split exists because PEML searches the generator (DARTS cells between the prefix
vectors and the output layer) while the injection stays the same for every generator.

A generator owns prefix vectors ``P`` of shape ``[length, hidden]``, transforms them
(``transform``: an MLP here, searched cells later) and maps the result through
:class:`KVProjection` to one ``(key, value)`` pair per attention slot, each shaped
``[kv_heads, length, head_dim]`` (no batch dimension: the prefix is shared by every row,
and the injection broadcasts it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

PrefixKV = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class AttentionSlot:
    """Geometry of one self-attention layer's keys/values (after grouped-query sharing)."""

    kv_heads: int
    head_dim: int

    @property
    def width(self) -> int:
        return self.kv_heads * self.head_dim


class KVProjection(nn.Module):
    """Output layer: ``[length, hidden]`` -> a (key, value) pair per slot.

    One Linear produces every slot's keys and values at once; slots may differ in
    geometry (a model mixing head sizes still works).
    """

    def __init__(self, hidden_size: int, slots: Sequence[AttentionSlot]) -> None:
        super().__init__()
        if not slots:
            raise ValueError("a prefix needs at least one attention slot")
        self.slots = tuple(slots)
        self.proj = nn.Linear(hidden_size, 2 * sum(s.width for s in self.slots))

    def forward(self, x: torch.Tensor) -> PrefixKV:
        length = x.shape[0]
        flat = self.proj(x)  # [length, 2 * Σ width]
        out: PrefixKV = []
        start = 0
        for slot in self.slots:
            pair = []
            for _ in range(2):
                chunk = flat[:, start : start + slot.width]
                start += slot.width
                pair.append(chunk.view(length, slot.kv_heads, slot.head_dim).transpose(0, 1))
            out.append((pair[0], pair[1]))
        return out


class PrefixGenerator(nn.Module):
    """Base of every prefix generator: vectors ``P`` -> ``transform`` -> :class:`KVProjection`.

    Subclasses override :meth:`transform`; the searched (DARTS) generator will do so with
    its cells. ``forward()`` takes no input: the prefix does not depend on the batch.
    """

    def __init__(self, *, length: int, hidden_size: int, slots: Sequence[AttentionSlot]) -> None:
        super().__init__()
        if length < 1:
            raise ValueError(f"prefix length must be >= 1, got {length}")
        self.length = length
        self.hidden_size = hidden_size
        self.slots = tuple(slots)
        self.vectors = nn.Parameter(torch.randn(length, hidden_size) * 0.02)
        self.output = KVProjection(hidden_size, self.slots)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Map the prefix vectors ``[length, hidden]`` to ``[length, hidden]``."""
        return x

    def forward(self) -> PrefixKV:
        return self.output(self.transform(self.vectors))


class PlainPrefix(PrefixGenerator):
    """Prefix tuning with the reparameterisation of Li & Liang: ``P -> tanh MLP -> K/V``.

    The MLP makes optimisation of the prefix far more stable than learning the per-layer
    keys and values directly; ``bottleneck=None`` drops it (P-tuning v2 style, where the
    only map left is the output layer).
    """

    def __init__(
        self,
        *,
        length: int,
        hidden_size: int,
        slots: Sequence[AttentionSlot],
        bottleneck: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(length=length, hidden_size=hidden_size, slots=slots)
        self.mlp: nn.Module
        if bottleneck is None:
            self.mlp = nn.Identity()
        else:
            self.mlp = nn.Sequential(
                nn.Linear(hidden_size, bottleneck),
                nn.Tanh(),
                nn.Linear(bottleneck, hidden_size),
            )
        self.dropout = nn.Dropout(dropout)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.mlp(x))
