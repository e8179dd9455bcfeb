"""PEML's training machinery around the shared loop: the architecture α and its schedule.

The trainer (:mod:`workers.trainer`) runs the weight step; this module adds what PEML
needs on top, through the loop's ``step_hook`` and at epoch boundaries:

- **α's own optimizer** (Adam at ``arch_lr``, as DARTS does): the weights' AdamW never
  sees α.
- **Schedules** (``spec.peml.schedule``):
  ``simultaneous``: LoRA, prefix and α from the same batch, every step;
  ``bilevel``: first-order DARTS, α from a *held-out* training batch after each weight step;
  ``lora_first`` / ``prefix_first``: sequential, one part frozen in each half of the epochs
  (α moves only while the prefix trains).
- **Entropy**: ``entropy_lambda · Σ_cells H(softmax(α))`` joins the loss (see :mod:`workers.step`).
- **Pruning** at each epoch's end, and the **discretization gap**: the dev score of the
  relaxed prefix against the discrete one (each cell its argmax operation).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from searchsvc.spec import PemlSpec
from workers.multitask import MultiTaskBase
from workers.nas import SearchedPrefix
from workers.sampling import MultiTaskSampler

HELD_OUT_FRACTION = 0.2  # of each task's training rows, for bilevel α updates


def searched_prefix(model: MultiTaskBase) -> SearchedPrefix | None:
    return model.prefix if isinstance(model.prefix, SearchedPrefix) else None


def split_held_out(n_rows: int, fraction: float = HELD_OUT_FRACTION) -> tuple[list[int], list[int]]:
    """``(train rows, held-out rows)``: the last ``fraction`` of a task's rows are held out
    for α (at least one each side when the task has two rows or more)."""
    held = min(max(1, int(round(n_rows * fraction))), n_rows - 1) if n_rows > 1 else 0
    return list(range(n_rows - held)), list(range(n_rows - held, n_rows))


def part_of(name: str) -> str:
    """Which trainable part a parameter name belongs to: ``lora``, ``prefix`` or ``head``."""
    if name.startswith("prefix."):
        return "prefix"
    if "lora_" in name:
        return "lora"
    return "head"


class PemlTraining:
    """α's optimizer, the schedule's phases, pruning and the architecture report for one trial."""

    def __init__(
        self,
        model: MultiTaskBase,
        spec: PemlSpec,
        *,
        arch_lr: float,
        max_epochs: int,
        held_out: Sequence[Any] | None = None,
        held_out_sampler: MultiTaskSampler | None = None,
        pad_id: int = 0,
        device: torch.device | str = "cpu",
        entropy_lambda: float = 0.0,
    ) -> None:
        prefix = searched_prefix(model)
        if prefix is None:
            raise ValueError("PEML training needs a model whose prefix is a SearchedPrefix (method 'peml')")
        if spec.schedule == "bilevel" and (held_out is None or held_out_sampler is None):
            raise ValueError("the bilevel schedule needs held-out training batches")
        self.model = model
        self.prefix = prefix
        self.spec = spec
        self.max_epochs = max_epochs
        self.entropy_lambda = entropy_lambda
        self.arch_optimizer = torch.optim.Adam(prefix.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)
        self._held_out = held_out
        self._held_out_sampler = held_out_sampler
        self._held_out_rows: Iterator[list[Any]] | None = None
        self._pad_id = pad_id
        self._device = torch.device(device)
        self._parts = {name: part_of(name) for name, p in model.named_parameters() if p.requires_grad}
        self.phase = "all"

    # ---- phases (sequential schedules) -------------------------------------------------

    def begin_epoch(self, epoch: int) -> str:
        """Set which parts train in this epoch; returns the phase (``all``, ``lora``, ``prefix``)."""
        first_half = epoch <= math.ceil(self.max_epochs / 2)
        if self.spec.schedule == "lora_first":
            self.phase = "lora" if first_half else "prefix"
        elif self.spec.schedule == "prefix_first":
            self.phase = "prefix" if first_half else "lora"
        else:
            self.phase = "all"
        params = dict(self.model.named_parameters())
        for name, part in self._parts.items():
            frozen = self.phase != "all" and part in ("lora", "prefix") and part != self.phase
            if self.prefix.is_discrete and name == "prefix.alpha":
                continue
            params[name].requires_grad_(not frozen)
        return self.phase

    @property
    def alpha_trains(self) -> bool:
        return self.phase in ("all", "prefix") and not self.prefix.is_discrete

    def weight_parameters(self) -> list[nn.Parameter]:
        """Everything the weight optimizer updates: all trainable parameters but α."""
        arch = {id(p) for p in self.prefix.arch_parameters()}
        return [p for p in self.model.parameters() if p.requires_grad and id(p) not in arch]

    # ---- α updates (the loop's step hook) ----------------------------------------------

    def step_hook(self, **info: Any) -> None:
        """After the weight step: move α (from this batch, or a held-out one in bilevel)."""
        if not self.alpha_trains:
            self.arch_optimizer.zero_grad(set_to_none=True)
            return
        if self.spec.schedule == "bilevel":
            self._bilevel_alpha_step()
        else:
            self.arch_optimizer.step()
        self.arch_optimizer.zero_grad(set_to_none=True)

    def _bilevel_alpha_step(self) -> None:
        """First-order DARTS: ∇_α of the held-out loss at the current weights."""
        assert self._held_out is not None and self._held_out_sampler is not None
        if self._held_out_rows is None:
            self._held_out_rows = self._cycle()
        rows = next(self._held_out_rows)
        parts = [(i, split, picked) for i, (split, picked) in enumerate(zip(self._held_out, rows, strict=True))]
        batch = self.model.collate(parts, pad_id=self._pad_id).to(self._device)
        alphas = self.prefix.arch_parameters()
        loss = torch.stack(self.model.task_losses(batch)).mean()
        if self.entropy_lambda:
            loss = loss + self.entropy_lambda * self.prefix.entropy()
        grads = torch.autograd.grad(loss, alphas, allow_unused=True)
        for alpha, grad in zip(alphas, grads, strict=True):
            alpha.grad = None if grad is None else grad.detach()
        self.arch_optimizer.step()

    def _cycle(self) -> Iterator[list[Any]]:
        assert self._held_out_sampler is not None
        while True:
            yield from self._held_out_sampler.epoch()

    # ---- epoch end -----------------------------------------------------------------------

    def prune(self) -> list[list[str]]:
        """Prune candidates whose weight stayed under the threshold (see ``SearchedPrefix.prune_step``)."""
        if self.prefix.is_discrete:
            return [[] for _ in self.prefix.mixed_cells]
        return self.prefix.prune_step(self.spec.prune_threshold, self.spec.prune_patience)

    def report(self, pruned_now: Sequence[Sequence[str]]) -> dict[str, Any]:
        """Per-epoch architecture metrics: α distribution, entropy, pruned and chosen op per cell."""
        cells = self.prefix.architecture()
        metrics: dict[str, Any] = {
            "nas/entropy": float(sum(cell["entropy"] for cell in cells)),
            "nas/architecture": cells,
            "nas/chosen": [cell["chosen"] for cell in cells],
            "nas/pruned_now": [list(names) for names in pruned_now],
            "nas/phase": self.phase,
        }
        for index, cell in enumerate(cells):
            metrics[f"nas/cell{index}/entropy"] = float(cell["entropy"])
            metrics[f"nas/cell{index}/active"] = len(cell["weights"])
        return metrics

    # ---- resume ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"arch_optimizer": self.arch_optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])


def discretization_metrics(relaxed: Mapping[str, float], discrete: Mapping[str, float]) -> dict[str, float]:
    """The gap between the relaxed and the discrete model's average dev score (positive: discretizing cost score)."""
    return {
        "relaxed_avg_dev_score": float(relaxed["avg_dev_score"]),
        "discrete_avg_dev_score": float(discrete["avg_dev_score"]),
        "discretization_gap": float(relaxed["avg_dev_score"] - discrete["avg_dev_score"]),
    }
