"""The training step's backward pass with per-task gradient coordination.

The trainer calls :meth:`GradientCoordinator.backward` once per step instead of
``loss.backward()``; gradient clipping and the optimizer step stay the trainer's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from searchsvc.spec import CoordinationSpec
from workers.coordination._conflict import conflict_fraction, conflict_score, project_conflicts
from workers.coordination._stats import StepStats
from workers.coordination._weights import DynamicTaskWeights


class GradientCoordinator:
    """Writes ``.grad`` for one step from per-task losses, coordinating the shared part.

    On a coordinated step (the 1st call, then every ``every_k``-th) the shared parameters
    get ``Σ_i λ_i · g̃_i``: each task's own gradient ``g_i`` over them, projected away
    from the others' where they conflict (PCGrad, if ``project``), weighted by the
    dynamic task weights λ (see :class:`DynamicTaskWeights`, updated from the *raw*
    ``g_i``). With ``grad_alpha = 0`` and no conflict this is exactly the gradient of the
    mean task loss, so coordination changes the step only where tasks disagree.

    Parameters outside ``shared_params`` (task heads) get the plain gradient of
    ``Σ_i λ_i · L_i``: a head is touched by its own task only, so there is nothing to
    coordinate. ``extra`` (entropy of α, regularizers: not task-specific) is
    backpropagated on top, unprojected, into every parameter it reaches.

    Steps in between take the cheap path: one backward of ``Σ_i λ_i · L_i + extra`` with
    the latest λ. A coordinated step costs one backward per task plus one for the heads.

    Like autograd, every path *adds* to existing ``.grad`` (the trainer zeroes it).
    Shared parameters must live on one device. Not thread-safe.
    """

    def __init__(
        self,
        shared_params: Sequence[nn.Parameter],
        n_tasks: int,
        *,
        grad_alpha: float,
        project: bool = True,
        every_k: int = 1,
        smoothing: float = 0.9,
        shuffle_seed: int | None = None,
    ) -> None:
        """
        Args:
            shared_params: the parameters every task trains (LoRA, prefix, encoder).
            n_tasks: how many task losses each step brings, always in the same order.
            grad_alpha: sensitivity α of the dynamic task weights (0: uniform).
            project: remove conflicts by projection; off, only λ weighting applies.
            every_k: coordinate every k-th step, counting from the first call.
            smoothing: EMA factor of the task weights' rate of gradient change.
            shuffle_seed: if set, the projection order is shuffled every coordinated
                step (as PCGrad does, so no task is always projected last) from a
                generator with this seed; if None, the natural task order.
        """
        params = list(shared_params)
        if not params:
            raise ValueError("need at least one shared parameter")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("shared parameters repeat")
        if any(not p.requires_grad for p in params):
            raise ValueError("every shared parameter must require grad")
        if every_k < 1:
            raise ValueError(f"every_k must be >= 1, got {every_k}")
        self.shared_params = params
        self.n_tasks = n_tasks
        self.project = project
        self.every_k = every_k
        self.steps = 0
        self._task_weights = DynamicTaskWeights(n_tasks, alpha=grad_alpha, smoothing=smoothing)
        self._shared_ids = {id(p) for p in params}
        self._dtype = _compute_dtype(params)
        self._generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)

    @property
    def weights(self) -> Tensor:
        """The latest task weights λ (CPU, float32)."""
        return self._task_weights.weights

    def state_dict(self) -> dict[str, Any]:
        """The step counter, the task weights' history and the shuffle generator: what a
        resumed trial needs to take the very steps an uninterrupted one would."""
        return {
            "steps": self.steps,
            "task_weights": self._task_weights.state_dict(),
            "generator": None if self._generator is None else self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self._task_weights.load_state_dict(state["task_weights"], device=self.shared_params[0].device)
        if self._generator is not None and state.get("generator") is not None:
            self._generator.set_state(state["generator"])

    def backward(self, task_losses: Sequence[Tensor], *, extra: Tensor | None = None) -> StepStats:
        """Accumulate this step's gradients into ``.grad`` (see the class docstring).

        Args:
            task_losses: one scalar loss per task, in the constructor's task order.
            extra: an optional scalar added to the objective without coordination.

        Raises:
            ValueError: wrong number of losses, or a loss that is not a scalar.
        """
        losses = list(task_losses)
        if len(losses) != self.n_tasks:
            raise ValueError(f"expected {self.n_tasks} task losses, got {len(losses)}")
        if any(loss.numel() != 1 for loss in losses):
            raise ValueError("every task loss must be a scalar")
        coordinated = self.steps % self.every_k == 0
        self.steps += 1
        if coordinated:
            return self._coordinated_step(losses, extra)
        weights = self._task_weights.weights
        _backward_if_needed(_weighted_sum(losses, weights) + (0.0 if extra is None else extra))
        return StepStats.plain(weights.tolist())

    def _coordinated_step(self, losses: list[Tensor], extra: Tensor | None) -> StepStats:
        raw = [self._flat_task_gradient(loss) for loss in losses]
        before, fraction = conflict_score(raw), conflict_fraction(raw)
        if self.project:
            projected = project_conflicts(raw, order=self._projection_order())
            after = conflict_score(projected)
        else:
            projected, after = raw, before
        weights = self._task_weights.update(raw)
        combined = torch.zeros_like(raw[0])
        for weight, g in zip(weights.tolist(), projected, strict=True):
            combined.add_(g, alpha=weight)
        self._accumulate_shared(combined)
        objective = _weighted_sum(losses, weights)
        others = [t for t in _graph_leaves(objective) if id(t) not in self._shared_ids]
        if others:
            torch.autograd.backward(objective, inputs=others, retain_graph=extra is not None)
        if extra is not None:
            _backward_if_needed(extra)
        return StepStats(
            coordinated=True,
            conflict_before=before,
            conflict_after=after,
            conflict_fraction=fraction,
            weights=weights.tolist(),
        )

    def _flat_task_gradient(self, loss: Tensor) -> Tensor:
        """One task's gradient over the shared parameters, flat; zeros where it does not reach."""
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, self.shared_params, retain_graph=True, allow_unused=True)
        else:
            grads = (None,) * len(self.shared_params)
        pieces = [
            (torch.zeros_like(p, dtype=self._dtype) if g is None else g.to(self._dtype)).reshape(-1)
            for p, g in zip(self.shared_params, grads, strict=True)
        ]
        return torch.cat(pieces)

    def _projection_order(self) -> list[int] | None:
        if self._generator is None:
            return None
        return torch.randperm(self.n_tasks, generator=self._generator).tolist()

    def _accumulate_shared(self, flat: Tensor) -> None:
        """Add the flat combined gradient into the shared parameters' ``.grad``, as autograd would."""
        offset = 0
        for p in self.shared_params:
            piece = flat[offset : offset + p.numel()].view(p.shape)
            offset += p.numel()
            if p.grad is None:
                p.grad = torch.empty_like(p).copy_(piece)
            else:
                p.grad.add_(piece.to(p.grad.dtype))


def coordinator_from_spec(
    spec: CoordinationSpec,
    shared_params: Sequence[nn.Parameter],
    n_tasks: int,
    *,
    grad_alpha: float,
) -> GradientCoordinator | None:
    """The coordinator a study's spec asks for, or None when coordination is off."""
    if not spec.enabled:
        return None
    return GradientCoordinator(shared_params, n_tasks, grad_alpha=grad_alpha, project=spec.project, every_k=spec.every_k)


def _compute_dtype(params: Sequence[Tensor]) -> torch.dtype:
    """At least float32 (bf16/fp16 dot products lose too much), float64 if any parameter is."""
    dtype = torch.float32
    for p in params:
        dtype = torch.promote_types(dtype, p.dtype)
    return dtype


def _weighted_sum(losses: Sequence[Tensor], weights: Tensor) -> Tensor:
    """``Σ_i λ_i · L_i`` with λ as constants (no gradient flows into the weights)."""
    terms = [w * loss.reshape(()) for w, loss in zip(weights.tolist(), losses, strict=True)]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _backward_if_needed(objective: Tensor) -> None:
    """``objective.backward()``, unless nothing in it requires grad (e.g. every task empty)."""
    if objective.requires_grad:
        objective.backward()


def _graph_leaves(root: Tensor) -> list[Tensor]:
    """Every leaf tensor that ``root.backward()`` would write ``.grad`` into.

    Found by walking the autograd graph to its ``AccumulateGrad`` nodes, so the heads'
    gradients can be computed without also recomputing the shared ones.
    """
    if not root.requires_grad:
        return []
    if root.grad_fn is None:
        return [root]
    leaves: dict[int, Tensor] = {}
    # The nodes are kept (not just their ids) so that no id is reused mid-walk; with a
    # node's Python object alive, autograd hands back that same object for it, which
    # keeps residual-connection diamonds from being walked once per path.
    seen: dict[int, object] = {}
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        variable = getattr(node, "variable", None)
        if isinstance(variable, Tensor):
            leaves.setdefault(id(variable), variable)
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return list(leaves.values())
