"""``SearchedPrefix``: the PEML prefix generator, searched DARTS-style (PrefixNAS).

``P [length, d] -> n mixed cells -> KVProjection(d) -> (key, value) per attention slot``.

It subclasses :class:`~workers.prefix.PrefixGenerator` and keeps its contract
(``forward() -> PrefixKV``), so :mod:`workers.injection` uses it unchanged. The one
restructuring: the base builds its vectors and output layer ``hidden_size`` wide, while
PrefixNAS works at a narrower width ``d`` (default ``min(hidden, 128)``) to stay within a
parameter budget. So the base is constructed with ``d`` as its width; ``hidden_size``
keeps the model's hidden size as given, and ``width`` is ``d``.

Architecture state, all on this module:

- ``alpha`` ``[n_cells, n_candidates]``: the architecture logits, the only parameter in
  :meth:`arch_parameters`, so the trainer can give it its own optimizer or learning rate;
- ``active`` (bool buffer): which candidates survive pruning. A buffer, so it travels with
  ``state_dict()``;
- ``below_streak`` (long buffer): consecutive pruning checks under the threshold, so a
  resumed run prunes exactly as an uninterrupted one would;
- ``frozen`` (bool buffer): set by the permanent :meth:`discretize`.

Two ways to evaluate discretely: :meth:`discretized` (a context manager; the same model,
relaxed again afterwards, for measuring the discretization gap) and :meth:`discretize`
(permanent: each cell keeps its argmax candidate only, ``α`` frozen; for retraining and export).

Configuration beyond the geometry: ``design`` (``distinct`` cells, or the ``shared`` ones
of older artifacts, see :mod:`workers.nas.cell`), ``output_scale`` and ``learn_gain`` (the
gain in front of the output layer, see ``OUTPUT_SCALE``) and ``relaxation`` (how the relaxed
cells weigh their candidates, :meth:`forward_weights`). :meth:`from_config` fills a config
written before a setting existed with the value that artifact was trained with.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from workers.nas.budget import check_parameter_budget
from workers.nas.candidates import DEFAULT_DROPOUTS, Candidate, candidate_space, candidates_from_spec
from workers.nas.cell import DESIGNS, MixedCell
from workers.nas.rules import (
    RELAXATIONS,
    discretize_choice,
    gumbel_softmax,
    masked_softmax,
    prune_rule,
    softmax_entropy,
    straight_through,
)
from workers.prefix import AttentionSlot, PrefixGenerator, register_generator

if TYPE_CHECKING:
    from searchsvc.spec import PemlSpec

DEFAULT_CELLS = 6
MAX_DEFAULT_WIDTH = 128
# Standard deviation of the noise added to α's zeros: enough to break exact ties between
# candidates (an exactly uniform α is a stationary point of the entropy term), far too
# small to favour any candidate.
ALPHA_INIT_STD = 1e-3
# The cells' output is multiplied by a gain before the key/value output layer. The cells'
# output is unit-scale (unit-RMS candidates, LayerNorm) where a plain prefix feeds its output
# layer ~0.03: ungained, the keys and values started at std ~0.5 on MiniLM (13x a plain
# prefix's; the frozen model's pooled output moved 45% at step 0 instead of 22%), and under
# Adam, which moves every weight by ~lr per step whatever its gradient's size, they also
# grew ~10x faster. A constant gain of 0.1 on the shared-linear cells tamed both (measured
# with MiniLM on sst2/stsb/wic, 500 rows, 2 epochs, lr 2e-3: avg dev 0.70 on seeds 0 and 3,
# where ungained the same trials ended at 0.25-0.35). That constant is ``output_scale``.
#
# Now the gain is learned: ``output_scale · g`` with ``g`` a per-feature parameter starting
# at 1. Keeping the constant in front is what keeps the taming: Adam moves ``g`` by ~lr per
# step, so the effective gain moves by ``output_scale · lr``, as slowly as the key/value
# weights it feeds, while training can still open or close each feature of the prefix.
# 0.04 for the distinct cells: their six unit-RMS residual updates leave the cells' output
# at RMS ~2.3 on MiniLM's geometry (the shared cells': ~0.85), and 0.04 starts the keys and
# values at std ~0.06, where the shared cells at 0.1 started them (0.074).
OUTPUT_SCALE = 0.04
LEGACY_OUTPUT_SCALE = 0.1  # the constant gain of shared-design artifacts written before the learned one


def default_width(hidden_size: int) -> int:
    """PrefixNAS's default cell width: ``min(hidden_size, 128)``."""
    return min(hidden_size, MAX_DEFAULT_WIDTH)


@register_generator("searched")
class SearchedPrefix(PrefixGenerator):
    """Prefix vectors ``[length, d]`` through ``cells`` mixed cells, then the K/V output layer.

    Registered as ``"searched"``; :meth:`to_config` / :meth:`from_config` rebuild an
    untrained twin, into which a ``state_dict()`` (mask and ``frozen`` flag included) loads.

    Raises:
        ValueError: ``length``, ``width``, ``cells`` below 1, a non-positive
            ``output_scale``, or an invalid candidate set.
    """

    def __init__(
        self,
        *,
        length: int,
        hidden_size: int,
        slots: Sequence[AttentionSlot],
        width: int | None = None,
        cells: int = DEFAULT_CELLS,
        candidates: Sequence[Candidate] | None = None,
        residual: bool = True,
        alpha_init_std: float = ALPHA_INIT_STD,
        output_scale: float = OUTPUT_SCALE,
        learn_gain: bool = True,
        design: str = "distinct",
        relaxation: str = "softmax",
    ) -> None:
        d = default_width(hidden_size) if width is None else width
        if d < 1:
            raise ValueError(f"prefix width must be >= 1, got {d}")
        if cells < 1:
            raise ValueError(f"a searched prefix needs at least one cell, got {cells}")
        if not 0 < output_scale < float("inf"):
            raise ValueError(f"output_scale must be positive and finite, got {output_scale}")
        if design not in DESIGNS:
            raise ValueError(f"unknown cell design {design!r}; choose one of {', '.join(DESIGNS)}")
        if relaxation not in RELAXATIONS:
            raise ValueError(f"unknown relaxation {relaxation!r}; choose one of {', '.join(RELAXATIONS)}")
        # The base builds vectors [length, d] and KVProjection(d, slots): exactly our layout.
        super().__init__(length=length, hidden_size=d, slots=slots)
        self.hidden_size = hidden_size
        self.width = d
        self.candidates: tuple[Candidate, ...] = tuple(candidate_space(dropouts=DEFAULT_DROPOUTS[:1]) if candidates is None else candidates)
        self.cells = nn.ModuleList(MixedCell(d, self.candidates, residual=residual, design=design) for _ in range(cells))
        shape = (cells, len(self.candidates))
        self.alpha_init_std = alpha_init_std
        self.alpha = nn.Parameter(torch.randn(shape) * alpha_init_std)
        self.active: torch.Tensor
        self.below_streak: torch.Tensor
        self.frozen: torch.Tensor
        self.register_buffer("active", torch.ones(shape, dtype=torch.bool))
        self.register_buffer("below_streak", torch.zeros(shape, dtype=torch.long))
        self.register_buffer("frozen", torch.tensor(False))
        self._discrete_view = False
        self.register_load_state_dict_post_hook(_sync_alpha_grad)  # type: ignore[no-untyped-call]
        self.design = design
        self.relaxation = relaxation
        # Gumbel's τ: set by the trainer's schedule (workers.peml) before each step; not state.
        self.temperature = 1.0
        # The cells' output is multiplied by output_scale · output_gain (see OUTPUT_SCALE);
        # artifacts from before the learned gain have no output_gain.
        self.output_scale = output_scale
        self.output_gain: nn.Parameter | None = nn.Parameter(torch.ones(d)) if learn_gain else None

    @classmethod
    def from_spec(
        cls,
        spec: PemlSpec,
        *,
        length: int,
        hidden_size: int,
        slots: Sequence[AttentionSlot],
        cells: int | None = None,
        residual: bool = True,
    ) -> SearchedPrefix:
        """Build from a study's ``peml`` section; ``cells`` (the trial's ``nas_cells``) overrides ``spec.cells``."""
        return cls(
            length=length,
            hidden_size=hidden_size,
            slots=slots,
            width=spec.width,
            cells=spec.cells if cells is None else cells,
            candidates=candidates_from_spec(spec),
            residual=residual,
            relaxation=spec.relaxation,
        )

    def to_config(self) -> dict[str, Any]:
        """JSON-ready constructor arguments, candidates as ``{"activation", "dropout", "layernorm"}``."""
        cell = self.mixed_cells[0]
        return {
            **super().to_config(),
            "width": self.width,
            "cells": len(self.cells),
            "candidates": [{"activation": c.activation, "dropout": c.dropout, "layernorm": c.layernorm} for c in self.candidates],
            "residual": cell.residual,
            "alpha_init_std": self.alpha_init_std,
            "output_scale": self.output_scale,
            "learn_gain": self.output_gain is not None,
            "design": self.design,
            "relaxation": self.relaxation,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PrefixGenerator:
        """Build from :meth:`to_config` output (candidates given as mappings).

        Raises:
            ValueError: the config does not fit the constructor or describes an invalid candidate.
        """
        kwargs = dict(config)
        # Configs written before the output gain existed ran their cells ungained: an
        # artifact exported then must predict as it did, not with today's default.
        kwargs.setdefault("output_scale", 1.0)
        # ... and configs written before the distinct design shared one linear per cell,
        # with a constant gain only.
        kwargs.setdefault("design", "shared")
        kwargs.setdefault("learn_gain", False)
        raw = kwargs.get("candidates")
        if raw is not None:
            try:
                kwargs["candidates"] = [c if isinstance(c, Candidate) else Candidate(**c) for c in raw]
            except TypeError as exc:
                raise ValueError(f"config does not fit {cls.__name__}: bad candidate: {exc}") from None
        return super().from_config(kwargs)

    # ----------------------------------------------------------------- forward

    @property
    def mixed_cells(self) -> list[MixedCell]:
        """The cells, typed (``self.cells`` is an ``nn.ModuleList`` of them)."""
        return cast("list[MixedCell]", list(self.cells))

    @property
    def is_discrete(self) -> bool:
        """Whether cells currently compute ``x + o_argmax(x)`` (permanently or inside :meth:`discretized`)."""
        return self._discrete_view or bool(self.frozen)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Run the prefix vectors ``[length, d]`` through the cells (relaxed or discrete), times the output gain."""
        cells = self.mixed_cells
        if self.is_discrete:
            for cell, choice in zip(cells, self.choices(), strict=True):
                x = cell.forward_one(x, choice)
            return self._gained(x)
        weights = self.forward_weights()
        rows: list[list[bool]] = self.active.tolist()  # one host sync for all cells
        for i, cell in enumerate(cells):
            x = cell(x, weights[i], [j for j, on in enumerate(rows[i]) if on])
        return self._gained(x)

    def _gained(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.output_scale
        return x if self.output_gain is None else x * self.output_gain

    def forward_weights(self) -> torch.Tensor:
        """The weights the relaxed cells mix with, by ``relaxation``: ``[n_cells, n_candidates]``.

        ``softmax``: ``softmax(α)``. ``gumbel``: in training a Gumbel-softmax sample at
        :attr:`temperature`, at evaluation ``softmax(α)``. ``ste``: the one-hot argmax with
        the softmax's gradient (training and evaluation alike: STE's forward *is* discrete).
        """
        if self.relaxation == "gumbel" and self.training:
            return gumbel_softmax(self.alpha, self.active, self.temperature)
        if self.relaxation == "ste":
            return straight_through(self.alpha, self.active)
        return self.mixture_weights()

    # ------------------------------------------------------ parameter groups

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits ``α`` only (their own optimizer / learning rate in bilevel schedules)."""
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except ``α``: prefix vectors, cell weights, output layer."""
        return [p for p in self.parameters() if p is not self.alpha]

    def parameter_count(self) -> int:
        """All parameters this generator adds to the model, ``α`` included."""
        return sum(p.numel() for p in self.parameters())

    def check_budget(self, base_params: int, *, fraction: float = 0.10) -> int:
        """:meth:`parameter_count`, after checking it is at most ``fraction`` of ``base_params``.

        Raises:
            ValueError: over budget; the message gives the count, the share and the limit.
        """
        return check_parameter_budget(self.parameter_count(), base_params, fraction=fraction, what="the PrefixNAS generator")

    # --------------------------------------------------- architecture state

    def mixture_weights(self) -> torch.Tensor:
        """``softmax(α)`` per cell over active candidates, 0 for pruned ones: ``[n_cells, n_candidates]``."""
        return masked_softmax(self.alpha, self.active)

    def cell_entropies(self) -> torch.Tensor:
        """``H(softmax(α_cell))`` per cell over active candidates (nats), differentiable: ``[n_cells]``."""
        return softmax_entropy(self.alpha, self.active)

    def entropy(self) -> torch.Tensor:
        """Σ over cells of the mixture entropy; the trainer adds ``entropy_lambda * entropy()`` to the loss."""
        return self.cell_entropies().sum()

    def choices(self) -> list[int]:
        """Per cell, the index of its argmax active candidate (lowest index on ties)."""
        alpha, active = self.alpha.detach(), self.active
        return [discretize_choice(alpha[i], active[i]) for i in range(len(self.cells))]

    def cell_weights(self) -> list[dict[str, float]]:
        """Per cell, candidate name -> mixture weight, active candidates only."""
        weights = self.mixture_weights().detach().cpu()
        rows: list[list[bool]] = self.active.tolist()
        return [
            {c.name: float(weights[i, j]) for j, c in enumerate(self.candidates) if rows[i][j]} for i in range(len(self.cells))
        ]

    def architecture(self) -> list[dict[str, Any]]:
        """JSON-ready per-cell summary: ``{"weights", "entropy", "pruned", "chosen"}`` (reported every epoch)."""
        entropies = self.cell_entropies().detach().cpu().tolist()
        rows: list[list[bool]] = self.active.tolist()
        return [
            {
                "weights": weights,
                "entropy": float(entropies[i]),
                "pruned": [c.name for j, c in enumerate(self.candidates) if not rows[i][j]],
                "chosen": self.candidates[choice].name,
            }
            for i, (weights, choice) in enumerate(zip(self.cell_weights(), self.choices(), strict=True))
        ]

    # ------------------------------------------------------ pruning, discretization

    @torch.no_grad()
    def prune_step(self, threshold_fraction: float, patience: int) -> list[list[str]]:
        """One end-of-epoch pruning check (see :func:`~workers.nas.rules.prune_rule`); names pruned now, per cell.

        A candidate under ``threshold_fraction / n_active`` for ``patience`` consecutive
        calls is deactivated; a cell's argmax is never pruned. After :meth:`discretize`
        there is nothing left to prune and nothing happens.

        Raises:
            ValueError: ``threshold_fraction`` outside ``[0, 1)`` or ``patience < 1``.
        """
        if bool(self.frozen):
            return [[] for _ in self.cells]
        weights = self.mixture_weights()
        pruned: list[list[str]] = []
        for i in range(len(self.cells)):
            decision = prune_rule(
                weights[i], self.active[i], self.below_streak[i], threshold_fraction=threshold_fraction, patience=patience
            )
            self.below_streak[i] = decision.streak
            self.active[i] &= ~decision.prune
            pruned.append([c.name for c, gone in zip(self.candidates, decision.prune.tolist(), strict=True) if gone])
        return pruned

    @contextmanager
    def discretized(self) -> Iterator[None]:
        """Evaluate the same model with each cell reduced to its argmax candidate, relaxed again on exit.

        Nothing is changed: leaving the block restores the relaxed mixture, so the trainer
        can score relaxed, then discrete, and report the discretization gap.
        """
        previous = self._discrete_view
        self._discrete_view = True
        try:
            yield
        finally:
            self._discrete_view = previous

    @torch.no_grad()
    def discretize(self) -> list[str]:
        """Permanently keep each cell's argmax candidate only (for export); returns the chosen names.

        The active mask becomes one-hot (so the choice survives ``state_dict()``), ``α`` stops
        requiring gradients, and pruning stops. Not reversible; use :meth:`discretized` to
        only look.
        """
        choices = self.choices()
        one_hot = torch.zeros_like(self.active)
        for i, choice in enumerate(choices):
            one_hot[i, choice] = True
        self.active.copy_(one_hot)
        self.below_streak.zero_()
        self.frozen.fill_(True)
        self.alpha.requires_grad_(False)
        return [self.candidates[choice].name for choice in choices]


def _sync_alpha_grad(module: nn.Module, incompatible_keys: Any) -> None:
    """After loading a state, ``α`` is trainable exactly when the loaded model is not discretized."""
    assert isinstance(module, SearchedPrefix)
    module.alpha.requires_grad_(not bool(module.frozen))
