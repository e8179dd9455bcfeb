"""Prefix generators: modules that produce a key/value prefix for every attention layer.

This module only *produces* tensors; :mod:`workers.injection` puts them into attention.
The split exists because PEML searches the generator (DARTS cells between the prefix
vectors and the output layer) while the injection stays the same for every generator.

A generator owns prefix vectors ``P`` of shape ``[length, hidden]``, transforms them
(``transform``: an MLP here, searched cells later) and maps the result through
:class:`KVProjection` to one ``(key, value)`` pair per attention slot, each shaped
``[kv_heads, length, head_dim]`` (no batch dimension: the prefix is shared by every row,
and the injection broadcasts it).

Generators register under a lowercase name (:func:`register_generator`; ``PlainPrefix`` is
``"plain"``) and round-trip through :meth:`PrefixGenerator.to_config` /
:meth:`PrefixGenerator.from_config`, so an exported artifact can rebuild its generator
without the trial that trained it (:func:`generator_spec`, :func:`generator_from_spec`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

PrefixKV = list[tuple[torch.Tensor, torch.Tensor]]

_G = TypeVar("_G", bound="PrefixGenerator")

# name -> generator class; filled by @register_generator when a generator's module is imported.
_GENERATORS: dict[str, type[PrefixGenerator]] = {}


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

    A subclass that adds constructor arguments extends :meth:`to_config` with them, so
    that ``type(g).from_config(g.to_config())`` builds an identical (untrained) generator.
    """

    registry_name: ClassVar[str | None] = None

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

    def to_config(self) -> dict[str, Any]:
        """JSON-ready constructor arguments (the slots as ``{"kv_heads", "head_dim"}`` objects)."""
        return {
            "length": self.length,
            "hidden_size": self.hidden_size,
            "slots": [{"kv_heads": s.kv_heads, "head_dim": s.head_dim} for s in self.slots],
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PrefixGenerator:
        """Build a generator from :meth:`to_config` output.

        Raises:
            ValueError: the config does not fit this class's constructor.
        """
        kwargs = dict(config)
        kwargs["slots"] = [AttentionSlot(int(s["kv_heads"]), int(s["head_dim"])) for s in kwargs.get("slots", ())]
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"config does not fit {cls.__name__}: {exc}") from None


def register_generator(name: str) -> Callable[[type[_G]], type[_G]]:
    """Class decorator: register a generator class under a lowercase ``name``.

    Raises:
        ValueError: the name is not lowercase, or another class already has it.
    """
    if not name or name != name.lower() or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"generator names are lowercase letters, digits, '_' or '-', got {name!r}")

    def decorate(cls: type[_G]) -> type[_G]:
        existing = _GENERATORS.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"a prefix generator is already registered as {name!r}: {existing.__module__}.{existing.__qualname__}")
        _GENERATORS[name] = cls
        cls.registry_name = name
        return cls

    return decorate


def registered_generators() -> dict[str, type[PrefixGenerator]]:
    """A copy of the registry: name -> class."""
    return dict(_GENERATORS)


def generator_spec(generator: PrefixGenerator) -> dict[str, Any]:
    """``{"name", "module", "config"}``: what :func:`generator_from_spec` needs to rebuild it.

    Raises:
        ValueError: the generator's class is not registered.
    """
    cls = type(generator)
    name = cls.registry_name
    if name is None or _GENERATORS.get(name) is not cls:
        raise ValueError(f"{cls.__qualname__} is not a registered prefix generator; decorate it with @register_generator")
    return {"name": name, "module": cls.__module__, "config": generator.to_config()}


def generator_from_spec(spec: Mapping[str, Any]) -> PrefixGenerator:
    """Rebuild an (untrained) generator from :func:`generator_spec` output.

    A name not registered yet is looked for by importing ``spec["module"]`` (only modules
    of the ``workers`` package), which registers the class as a side effect.

    Raises:
        ValueError: unknown generator name, or a config that does not fit the class.
    """
    name = str(spec["name"])
    module = spec.get("module")
    if name not in _GENERATORS and isinstance(module, str) and module.split(".")[0] == "workers":
        importlib.import_module(module)
    cls = _GENERATORS.get(name)
    if cls is None:
        raise ValueError(f"unknown prefix generator {name!r}; registered: {', '.join(sorted(_GENERATORS)) or 'none'}")
    return cls.from_config(spec.get("config", {}))


@register_generator("plain")
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
        self.bottleneck = bottleneck
        self.dropout = nn.Dropout(dropout)

    def to_config(self) -> dict[str, Any]:
        return {**super().to_config(), "bottleneck": self.bottleneck, "dropout": float(self.dropout.p)}

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.mlp(x))
