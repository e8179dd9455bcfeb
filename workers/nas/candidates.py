"""Candidate operations of a PrefixNAS cell: (activation, dropout, optional LayerNorm).

A candidate is pure configuration; the weights live in the cell (:mod:`workers.nas.cell`),
one linear map per (activation, LayerNorm) pair, so a candidate says *which* map and
which pointwise steps: ``dropout(norm(act(W_{act,ln}(LN?(x)))))``.

Dropout is part of the search only when α is trained on held-out batches (the bilevel
schedule, or ``peml.search_dropout: true``): two candidates that differ only by dropout are
the same function at evaluation, and on training batches the one with less noise always
looks better, so α would learn "less dropout", not "better architecture". Otherwise every
candidate uses one fixed dropout (:func:`candidates_from_spec`).

Names are stable and readable (``gelu-d0.3-ln``, ``relu-d0.1``) because they end up in
every epoch's report and in the exported architecture, where people read them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from searchsvc.spec import PemlSpec

# The activations PEML searches over (the same names as ``searchsvc.spec.ACTIVATIONS``).
ACTIVATION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "leaky_relu": F.leaky_relu,  # negative slope 0.01, torch's default
    "gelu": F.gelu,
}
DEFAULT_ACTIVATIONS: tuple[str, ...] = ("relu", "tanh", "leaky_relu", "gelu")
DEFAULT_DROPOUTS: tuple[float, ...] = (0.1, 0.3, 0.5)
DEFAULT_LAYERNORM: tuple[bool, ...] = (True, False)


@dataclass(frozen=True)
class Candidate:
    """One candidate operation ``o(x) = dropout(act(linear(LN?(x))))``; the linear is the cell's.

    Raises:
        ValueError: unknown activation or a dropout outside ``[0, 1)``.
    """

    activation: str
    dropout: float
    layernorm: bool

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATION_FUNCTIONS:
            known = ", ".join(ACTIVATION_FUNCTIONS)
            raise ValueError(f"unknown activation {self.activation!r}; choose one of {known}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def name(self) -> str:
        """A stable, readable name, e.g. ``gelu-d0.3-ln`` or ``relu-d0.1``."""
        return f"{self.activation}-d{self.dropout:g}" + ("-ln" if self.layernorm else "")

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        """The activation alone (candidates differing only in dropout can share this result)."""
        return ACTIVATION_FUNCTIONS[self.activation](h)

    def finish(self, h: torch.Tensor, *, training: bool) -> torch.Tensor:
        """``dropout(act(h))`` where ``h`` is the linear map's output (on ``LN(x)`` if ``layernorm``)."""
        return F.dropout(self.activate(h), p=self.dropout, training=training)


def candidate_space(
    *,
    activations: Iterable[str] = DEFAULT_ACTIVATIONS,
    dropouts: Iterable[float] = DEFAULT_DROPOUTS,
    layernorm: Iterable[bool] = DEFAULT_LAYERNORM,
) -> tuple[Candidate, ...]:
    """The product of the three choices, in a fixed order (activation, then dropout, then LN).

    The defaults give the full 4 x 3 x 2 = 24 candidates of the PEML paper. The order is
    the column order of the architecture weights ``α``, so it must not depend on anything
    but the inputs: a checkpoint's ``α`` is only meaningful against the same order.

    Raises:
        ValueError: an empty or repeated choice, or an invalid candidate.
    """
    acts, drops, norms = list(activations), [float(p) for p in dropouts], [bool(n) for n in layernorm]
    for label, values in (("activations", acts), ("dropouts", drops), ("layernorm", norms)):
        if not values:
            raise ValueError(f"{label} must not be empty")
        if len(set(values)) != len(values):
            raise ValueError(f"{label} repeat: {values}")
    candidates = tuple(Candidate(a, p, n) for a, p, n in itertools.product(acts, drops, norms))
    check_unique_names(candidates)
    return candidates


def candidates_from_spec(spec: PemlSpec) -> tuple[Candidate, ...]:
    """The candidate set a study's ``peml`` section asks for.

    Without a dropout search (``spec.dropout_searched()`` false, the default outside the
    bilevel schedule) every candidate takes the first listed dropout: 4 activations x 2
    LayerNorm choices = 8 candidates by default, each its own linear map.
    """
    dropouts = spec.dropouts if spec.dropout_searched() else spec.dropouts[:1]
    return candidate_space(activations=spec.activations, dropouts=dropouts, layernorm=spec.layernorm)


def check_unique_names(candidates: Sequence[Candidate]) -> None:
    """Refuse candidate sets whose names collide (names key every report and export).

    Raises:
        ValueError: no candidates, or two candidates share a name.
    """
    if not candidates:
        raise ValueError("a cell needs at least one candidate operation")
    names = [c.name for c in candidates]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"candidate names repeat: {repeated}")
