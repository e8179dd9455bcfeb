"""The backward pass of one training step: gradient coordination, entropy, task similarity.

Built once per trial and handed to :func:`workers.trainer.train_epoch` as ``backward_fn``.

- With ``coordination.enabled``: per-task gradients over the shared parameters (all but
  the task heads), conflict projection and dynamic task weights λ every ``every_k`` steps
  (:class:`workers.coordination.GradientCoordinator`).
- Without it, the same coordinator in *measuring* mode (no projection, uniform λ) samples
  the gradient conflict score every ``CONFLICT_SAMPLE_EVERY`` steps, so every method
  reports how much its tasks fight; in between, a plain backward of the mean loss.
- PEML's entropy term is not here: :class:`workers.peml.PemlTraining` adds it, on its
  schedule, in its step hook. ``coordination.similarity_weight`` adds
  ``Σ S_ij ‖h_i − h_j‖²`` over the tasks' mean representations in the batch, with ``S``
  the cosine similarity of the tasks' instruction embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from searchsvc.spec import CoordinationSpec
from workers.coordination import GradientCoordinator, coordinator_from_spec, similarity_penalty, task_similarity
from workers.multitask import MultiTaskBase

CONFLICT_SAMPLE_EVERY = 10


def _named_shared(model: MultiTaskBase) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad and not name.startswith("heads.")]


class StepBackward:
    """``backward_fn(losses, extra)`` for the training loop; returns the step's diagnostics."""

    def __init__(
        self,
        model: MultiTaskBase,
        *,
        task_names: Sequence[str],
        coordination: CoordinationSpec,
        grad_alpha: float,
        similarity: torch.Tensor | None = None,
    ) -> None:
        self.model = model
        self.task_names = list(task_names)
        self.coordinated = coordination.enabled
        self._coordination = coordination
        self._grad_alpha = grad_alpha
        # Keyed by the names of the parameters that train (stable across processes, so a
        # checkpoint can say which coordinator each saved state belongs to).
        self._coordinators: dict[tuple[str, ...], GradientCoordinator] = {}
        self._saved: dict[tuple[str, ...], dict[str, Any]] = {}
        self.similarity = similarity
        self.similarity_weight = coordination.similarity_weight

    def coordinator(self) -> GradientCoordinator:
        """The coordinator over the parameters that train now (sequential PEML phases
        freeze LoRA or the prefix, and autograd refuses frozen tensors)."""
        named = _named_shared(self.model)
        key = tuple(name for name, _ in named)
        if key not in self._coordinators:
            shared, n = [p for _, p in named], len(self.task_names)
            made = coordinator_from_spec(self._coordination, shared, n, grad_alpha=self._grad_alpha)
            made = made or GradientCoordinator(shared, n, grad_alpha=0.0, project=False, every_k=CONFLICT_SAMPLE_EVERY)
            if key in self._saved:
                made.load_state_dict(self._saved.pop(key))
            self._coordinators[key] = made
        return self._coordinators[key]

    def state_dict(self) -> dict[str, Any]:
        """Every coordinator's state (λ history, step counter), for the trial's checkpoint."""
        states = {key: c.state_dict() for key, c in self._coordinators.items()}
        return {"coordinators": [[list(key), state] for key, state in {**self._saved, **states}.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; each coordinator picks its state up when it is next built."""
        self._coordinators.clear()
        self._saved = {tuple(key): saved for key, saved in state["coordinators"]}

    def __call__(self, losses: list[torch.Tensor], extra: torch.Tensor | None) -> dict[str, float]:
        terms = [] if extra is None else [extra]
        if self.similarity is not None and self.similarity_weight:
            means = getattr(self.model, "last_task_means", None)
            if means is not None:
                terms.append(self.similarity_weight * similarity_penalty(torch.stack(means), self.similarity))
        total = torch.stack([t.reshape(()) for t in terms]).sum() if terms else None
        if not _named_shared(self.model):  # method 'head': nothing shared, so no conflict to measure or resolve
            objective = torch.stack(losses).mean()
            (objective if total is None else objective + total).backward()
            return {}
        stats = self.coordinator().backward(losses, extra=total)
        out: dict[str, float] = {}
        if stats.coordinated and len(losses) > 1:
            out["grad_conflict"] = stats.conflict_before
            out["grad_conflict_fraction"] = stats.conflict_fraction
            if self.coordinated:
                out["grad_conflict_after"] = stats.conflict_after
        if self.coordinated:
            for name, weight in zip(self.task_names, stats.weights, strict=True):
                out[f"task_weight/{name}"] = float(weight)
        return out


@torch.no_grad()
def instruction_similarity(model: MultiTaskBase, tokenizer: Any, instructions: Sequence[str | None], *, device: torch.device) -> torch.Tensor:
    """``S_ij``: cosine similarity of the tasks' instruction embeddings, by the frozen model.

    The embedding is the model's mean-pooled representation of the instruction without the
    prefix (LoRA starts at zero, so this is the base model). Tasks without an instruction
    get NaN rows and columns, which the penalty leaves out.

    Raises:
        ValueError: the model has no sentence representation (text-to-text families).
    """
    encode = getattr(model, "encode", None)
    if encode is None:
        raise ValueError("coordination.similarity_weight: task-similarity regularization needs an encoder-family model")
    width = None
    rows: list[torch.Tensor | None] = []
    for text in instructions:
        if not text:
            rows.append(None)
            continue
        inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=128).to(device)
        pooled = encode(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))[0]
        width = pooled.shape[-1]
        rows.append(pooled.float())
    if width is None:
        raise ValueError("coordination.similarity_weight > 0 but no task has an instruction")
    nan = torch.full((width,), float("nan"), device=device)
    return task_similarity(torch.stack([row if row is not None else nan for row in rows]))
