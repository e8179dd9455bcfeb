"""PEML's training machinery around the shared loop: the architecture α and its schedules.

The trainer (:mod:`workers.trainer`) runs the weight step; this module adds what PEML
needs on top, through the loop's ``step_hook`` and at epoch boundaries:

- **α's own optimizer**: Adam (betas 0.5/0.999, as DARTS) at ``arch_lr`` with *no coupled*
  weight decay. Coupled decay is what kept the search from ever running: Adam divides the
  decay term by √v ≈ |∇α| (~7e-5 on MiniLM), so a decay of 1e-3 pulled α back to 0 far
  harder than the task pushed it, and α stayed uniform. ``peml.arch_weight_decay`` (≤ 1e-4,
  default 0) is decoupled (AdamW), a plain shrink of ``lr · wd`` per step.
- **Schedules** (``spec.peml.schedule``): ``simultaneous``: LoRA, prefix and α from the
  same batch, every step; ``bilevel``: first-order DARTS, α from a *held-out* training batch
  after each weight step; ``lora_first`` / ``prefix_first``: sequential, one part frozen in
  each half of the search epochs (α moves only while the prefix trains).
- **Entropy**: ``λ_t · Σ_cells H(softmax(α))`` added to α's gradient in the step hook, with
  ``λ_t`` rising linearly from 0 to ``entropy_lambda`` over the search steps
  (``peml.entropy_schedule``): α first follows the task alone, then is pushed to commit.
- **Relaxations** (``peml.relaxation``): softmax, gumbel (τ annealed geometrically from
  ``gumbel_temperature[0]`` to ``[1]`` over the search steps), ste (see
  :meth:`~workers.nas.SearchedPrefix.forward_weights`).
- **Pruning** every ``peml.prune_every`` steps (0: at epoch ends).
- **Discretize, then retrain**: with ``peml.retrain_epochs = R``, the first
  ``max_epochs − R`` epochs search; at the start of the next one :meth:`PemlTraining.finalize`
  keeps each cell's argmax permanently and freezes α, and the discrete model trains on.
- **Reports** per epoch (:meth:`PemlTraining.report`): entropy and top weight per cell,
  ``nas/converged``, α's gradient norm and signal-to-noise ratio, α's variance, λ_t, τ.
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
ARCH_BETAS = (0.5, 0.999)  # DARTS's α optimizer: a short first-moment memory, α follows the task quickly


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


def arch_optimizer(params: Sequence[nn.Parameter], *, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """α's optimizer: Adam with *decoupled* decay only (AdamW; ``weight_decay=0`` is plain Adam).

    Raises:
        ValueError: ``lr <= 0`` or ``weight_decay`` outside ``[0, 1e-4]`` (see the module docstring).
    """
    if not lr > 0:
        raise ValueError(f"arch_lr must be positive, got {lr}")
    if not 0.0 <= weight_decay <= 1e-4:
        raise ValueError(f"peml.arch_weight_decay must be in [0, 1e-4], got {weight_decay}")
    return torch.optim.AdamW(list(params), lr=lr, betas=ARCH_BETAS, weight_decay=weight_decay)


def entropy_weight(step: int, *, target: float, total_steps: int, schedule: str = "linear") -> float:
    """``λ`` at (0-based) ``step``: ``target · min(1, (step + 1) / total_steps)`` for ``linear``, ``target`` for ``constant``."""
    if schedule == "constant" or target == 0.0:
        return target
    return target * min(1.0, (step + 1) / max(1, total_steps))


def gumbel_temperature(step: int, *, start: float, end: float, total_steps: int) -> float:
    """Geometric anneal: ``start`` at step 0, ``end`` at the last search step and after."""
    progress = min(1.0, step / max(1, total_steps - 1))
    return start * (end / start) ** progress


class GradientStats:
    """Running first and second moments of α's task gradient over one epoch.

    ``snr`` is ``‖E g‖ / √(Σ_j Var g_j)``: how much of the gradient α sees is a consistent
    direction rather than batch noise. Near 0 the search is steered by noise (and the
    entropy term decides); above ~1 the task has a clear preference.
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum: torch.Tensor | None = None
        self._sum_sq: torch.Tensor | None = None
        self._norm_sum = 0.0

    def add(self, grad: torch.Tensor) -> None:
        g = grad.detach().to(torch.float64)
        self._sum = g.clone() if self._sum is None else self._sum + g
        self._sum_sq = g.square() if self._sum_sq is None else self._sum_sq + g.square()
        self._norm_sum += float(g.norm())
        self.count += 1

    def mean_norm(self) -> float:
        return self._norm_sum / self.count if self.count else 0.0

    def snr(self) -> float:
        if self._sum is None or self._sum_sq is None or self.count < 2:
            return 0.0
        mean = self._sum / self.count
        variance = (self._sum_sq / self.count - mean.square()).clamp(min=0.0) * self.count / (self.count - 1)
        noise = float(variance.sum().sqrt())
        signal = float(mean.norm())
        return signal / max(noise, 1e-12)  # finite, so the report stays JSON


class PemlTraining:
    """α's optimizer, the schedules, pruning, finalization and the architecture report for one trial.

    ``max_epochs``: the trial's epochs; the first ``max_epochs − spec.retrain_epochs`` search
    (:attr:`search_epochs`). ``steps_per_epoch``: the sampler's steps per epoch, which the
    entropy and temperature schedules need to move within an epoch (without it they move
    once per epoch). ``entropy_lambda``: the level λ reaches at the end of the search.

    Raises:
        ValueError: a model without a searched prefix, a bilevel schedule without held-out
            batches, or ``peml.retrain_epochs`` leaving no search epoch.
    """

    def __init__(
        self,
        model: MultiTaskBase,
        spec: PemlSpec,
        *,
        arch_lr: float,
        max_epochs: int,
        steps_per_epoch: int | None = None,
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
        if spec.retrain_epochs >= max_epochs:
            raise ValueError(f"peml.retrain_epochs ({spec.retrain_epochs}) must leave at least one search epoch "
                             f"of train.max_epochs ({max_epochs})")
        self.model = model
        self.prefix = prefix
        self.spec = spec
        self.max_epochs = max_epochs
        self.search_epochs = max_epochs - spec.retrain_epochs
        self.steps_per_epoch = steps_per_epoch
        self.entropy_lambda = entropy_lambda
        self.arch_optimizer = arch_optimizer(prefix.arch_parameters(), lr=arch_lr, weight_decay=spec.arch_weight_decay)
        self._held_out = held_out
        self._held_out_sampler = held_out_sampler
        self._held_out_rows: Iterator[list[Any]] | None = None
        self._pad_id = pad_id
        self._device = torch.device(device)
        self._parts = {name: part_of(name) for name, p in model.named_parameters() if p.requires_grad}
        self.phase = "all"
        self.epoch = 0
        self.last_lambda = 0.0
        self.grad_stats = GradientStats()
        self._pruned: list[list[str]] = [[] for _ in prefix.mixed_cells]
        self._search_gap: float | None = None
        self._set_temperature(0)

    # ---- the search's extent ---------------------------------------------------------------

    @property
    def searching(self) -> bool:
        """Whether α is still searched (false once :meth:`finalize` made the prefix discrete)."""
        return not self.prefix.is_discrete

    def scores_objective(self, epoch: int) -> bool:
        """Whether ``epoch``'s score may be the trial's objective (and count towards patience).

        With ``retrain_epochs > 0`` only the retrained discrete model's epochs do: a search
        epoch's discrete score is the argmax of a still-moving α, scored without training.
        """
        return self.spec.retrain_epochs == 0 or epoch > self.search_epochs

    def _search_steps(self) -> int | None:
        return None if self.steps_per_epoch is None else self.search_epochs * self.steps_per_epoch

    def entropy_lambda_at(self, step: int) -> float:
        """λ at a global step (by epochs when ``steps_per_epoch`` is unknown)."""
        total = self._search_steps()
        if total is None:
            total, step = self.search_epochs, max(0, self.epoch - 1)
        return entropy_weight(step, target=self.entropy_lambda, total_steps=total, schedule=self.spec.entropy_schedule)

    def _set_temperature(self, step: int) -> None:
        start, end = self.spec.gumbel_temperature
        total = self._search_steps()
        if total is None:
            total, step = self.search_epochs, max(0, self.epoch - 1)
        self.prefix.temperature = gumbel_temperature(step, start=start, end=end, total_steps=total)

    # ---- phases ------------------------------------------------------------------------------

    def begin_epoch(self, epoch: int) -> str:
        """Set which parts train in this epoch; returns the phase (``all``, ``lora``, ``prefix``).

        The first epoch after the search epochs finalizes the architecture (:meth:`finalize`); the
        retrain epochs train everything (``all``). Sequential schedules split the search
        epochs in halves.
        """
        self.epoch = epoch
        self.grad_stats = GradientStats()
        self._pruned = [[] for _ in self.prefix.mixed_cells]
        if epoch > self.search_epochs and self.searching:
            self.finalize()
        if self.steps_per_epoch is not None:
            self._set_temperature((epoch - 1) * self.steps_per_epoch)
        else:
            self._set_temperature(0)
        first_half = epoch <= math.ceil(self.search_epochs / 2)
        if epoch > self.search_epochs:
            self.phase = "all"
        elif self.spec.schedule == "lora_first":
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

    def step_hook(self, *, step: int = 0, **info: Any) -> None:
        """After the weight step: move α (from this batch's gradient, or a held-out batch in
        bilevel) with the entropy term at this step's λ; then prune every ``prune_every``
        steps and set the next step's Gumbel temperature."""
        if not self.alpha_trains:
            self.arch_optimizer.zero_grad(set_to_none=True)
            return
        self.last_lambda = self.entropy_lambda_at(step)
        alpha = self.prefix.alpha
        if self.spec.schedule == "bilevel":
            self._held_out_gradient()
        if alpha.grad is None:
            alpha.grad = torch.zeros_like(alpha)
        self.grad_stats.add(alpha.grad)
        if self.last_lambda:
            with torch.enable_grad():
                (entropy_grad,) = torch.autograd.grad(self.last_lambda * self.prefix.entropy(), [alpha])
            alpha.grad.add_(entropy_grad)
        self.arch_optimizer.step()
        self.arch_optimizer.zero_grad(set_to_none=True)
        every = self.spec.prune_every
        if every and (step + 1) % every == 0:
            for names, pruned in zip(self._pruned, self._prune_now(), strict=True):
                names.extend(pruned)
        self._set_temperature(step + 1)

    def _held_out_gradient(self) -> None:
        """First-order DARTS: ``α.grad`` becomes ∇_α of a held-out batch's loss at the current weights."""
        assert self._held_out is not None and self._held_out_sampler is not None
        if self._held_out_rows is None:
            self._held_out_rows = self._cycle()
        rows = next(self._held_out_rows)
        parts = [(i, split, picked) for i, (split, picked) in enumerate(zip(self._held_out, rows, strict=True))]
        batch = self.model.collate(parts, pad_id=self._pad_id).to(self._device)
        alphas = self.prefix.arch_parameters()
        with torch.enable_grad():
            loss = torch.stack(self.model.task_losses(batch)).mean()
            grads = torch.autograd.grad(loss, alphas, allow_unused=True)
        for alpha, grad in zip(alphas, grads, strict=True):
            alpha.grad = None if grad is None else grad.detach()

    def _cycle(self) -> Iterator[list[Any]]:
        assert self._held_out_sampler is not None
        while True:
            yield from self._held_out_sampler.epoch()

    # ---- pruning, finalization ----------------------------------------------------------------

    def _prune_now(self) -> list[list[str]]:
        return self.prefix.prune_step(self.spec.prune_threshold, self.spec.prune_patience)

    def prune(self) -> list[list[str]]:
        """At an epoch's end: the candidates pruned in this epoch, per cell.

        With ``prune_every > 0`` the checks ran during the epoch and this only collects
        their result; with 0 this is the check (see ``SearchedPrefix.prune_step``).
        """
        if not self.searching:
            return [[] for _ in self.prefix.mixed_cells]
        if self.spec.prune_every:
            pruned, self._pruned = self._pruned, [[] for _ in self.prefix.mixed_cells]
            return pruned
        return self._prune_now()

    def finalize(self) -> list[str]:
        """End the search: each cell keeps its argmax candidate for good and α freezes.

        What trains afterwards is the discrete architecture (the one the artifact exports);
        returns the chosen candidate names. Idempotent.
        """
        self.arch_optimizer.zero_grad(set_to_none=True)
        if not self.prefix.is_discrete:
            return self.prefix.discretize()
        return [self.prefix.candidates[choice].name for choice in self.prefix.choices()]

    # ---- reports ----------------------------------------------------------------------------

    def gap_metrics(self, relaxed: Mapping[str, float], discrete: Mapping[str, float]) -> dict[str, float]:
        """:func:`discretization_metrics`, plus ``search_discretization_gap``: the gap at the
        last epoch that searched (after :meth:`finalize` both scores are the discrete model's,
        so the epoch's own gap is 0)."""
        metrics = discretization_metrics(relaxed, discrete)
        if self.searching:
            self._search_gap = metrics["discretization_gap"]
        if self._search_gap is not None:
            metrics["search_discretization_gap"] = self._search_gap
        return metrics

    def report(self, pruned_now: Sequence[Sequence[str]]) -> dict[str, Any]:
        """Per-epoch architecture metrics (see the module docstring)."""
        cells = self.prefix.architecture()
        top = [max(cell["weights"].values()) for cell in cells]
        entropy = float(sum(cell["entropy"] for cell in cells))
        maximum = len(cells) * math.log(len(self.prefix.candidates))
        metrics: dict[str, Any] = {
            "nas/entropy": entropy,
            "nas/entropy_max": maximum,
            "nas/entropy_fraction": entropy / maximum if maximum > 0 else 0.0,
            "nas/architecture": cells,
            "nas/chosen": [cell["chosen"] for cell in cells],
            "nas/pruned_now": [list(names) for names in pruned_now],
            "nas/phase": self.phase,
            "nas/searching": float(self.searching),
            "nas/search_epochs": self.search_epochs,
            "nas/relaxation": self.prefix.relaxation,
            "nas/top_weight_min": min(top),
            "nas/converged": float(min(top) > self.spec.converged_weight),
            "nas/alpha_variance": self.alpha_variance(),
            "nas/alpha_grad_norm": self.grad_stats.mean_norm(),
            "nas/alpha_grad_snr": self.grad_stats.snr(),
            "nas/entropy_lambda": self.last_lambda,
        }
        if self.prefix.relaxation == "gumbel":
            metrics["nas/temperature"] = float(self.prefix.temperature)
        for index, cell in enumerate(cells):
            metrics[f"nas/cell{index}/entropy"] = float(cell["entropy"])
            metrics[f"nas/cell{index}/active"] = len(cell["weights"])
            metrics[f"nas/cell{index}/top_weight"] = top[index]
        return metrics

    def alpha_variance(self) -> float:
        """Mean over cells of the variance of α over the cell's active candidates (0 with one left)."""
        alpha, active = self.prefix.alpha.detach(), self.prefix.active
        values = []
        for i in range(alpha.shape[0]):
            row = alpha[i][active[i]]
            values.append(float(row.var(unbiased=False)) if row.numel() > 1 else 0.0)
        return sum(values) / len(values)

    # ---- resume ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """α's optimizer state and the last search gap; the rest is the prefix's own state
        (α, the active mask, the discrete flag) or derives from the global step."""
        return {"arch_optimizer": self.arch_optimizer.state_dict(), "search_gap": self._search_gap}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self._search_gap = state.get("search_gap")


def discretization_metrics(relaxed: Mapping[str, float], discrete: Mapping[str, float]) -> dict[str, float]:
    """The gap between the relaxed and the discrete model's average dev score (positive: discretizing cost score)."""
    return {
        "relaxed_avg_dev_score": float(relaxed["avg_dev_score"]),
        "discrete_avg_dev_score": float(discrete["avg_dev_score"]),
        "discretization_gap": float(relaxed["avg_dev_score"] - discrete["avg_dev_score"]),
    }
