"""The contract every multi-task model meets, so one training loop serves every family.

Two kinds implement it: :class:`workers.encoder.MultiTaskModel` (an encoder with one head
per task) and :class:`workers.text2text.model.Text2TextModel` (T5 / Llama writing label
texts, no heads). The loop in :mod:`workers.trainer` only ever calls:

- ``encode_split(tokenizer, task_index, examples, max_seq_len=...)``: token ids of a split;
- ``collate(parts, pad_id=...)``: one batch from ``(task index, split, rows)`` parts;
- ``task_losses(batch) -> list[Tensor]``: one scalar loss per task segment, in segment order;
- ``regularization() -> Tensor | None``: extra loss terms of the method (AdaLoRA's);
- ``after_optimizer_step(global_step)``: per-step method upkeep (AdaLoRA's rank budget);
- ``predict_batch(batch) -> Tensor`` / ``predict_split(...)``: class indices or floats;
- ``trainable_state_dict()``, ``load_trainable_state_dict()``, ``parameter_counts()``.

This base class implements everything that does not depend on the kind: the prefix
context, LoRA/AdaLoRA upkeep, the trainable state and the length-sorted evaluation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from peft import AdaLoraConfig, PeftModel
from torch import nn

from workers.batching import length_sorted_chunks
from workers.injection import PrefixAttention
from workers.prefix import PrefixGenerator

ADALORA_ORTH_WEIGHT = 0.5  # PEFT's default orth_reg_weight


class MultiTaskBase(nn.Module):
    """Shared parts of the multi-task models; subclasses set :attr:`family` and the abstract methods.

    ``backbone`` is the (possibly PEFT-wrapped) transformers model; ``prefix`` the prefix
    generator, applied through ``prefix_attention`` around every forward pass.
    """

    family: str = ""

    def __init__(
        self,
        *,
        task_names: Sequence[str],
        prefix: PrefixGenerator | None = None,
        prefix_attention: PrefixAttention | None = None,
    ) -> None:
        super().__init__()
        if (prefix is None) != (prefix_attention is None):
            raise ValueError("prefix and prefix_attention go together")
        if len(set(task_names)) != len(task_names) or not task_names:
            raise ValueError(f"task names must be distinct and at least one, got {list(task_names)}")
        self.task_names: tuple[str, ...] = tuple(task_names)
        self.prefix = prefix
        self._prefix_attention = prefix_attention

    # ---- what each kind implements -------------------------------------------------------

    @property
    def backbone(self) -> nn.Module:
        """The transformers model (PEFT-wrapped when the method has LoRA)."""
        raise NotImplementedError

    def encode_split(self, tokenizer: Any, task_index: int, examples: Sequence[Any], *, max_seq_len: int) -> Any:
        raise NotImplementedError

    def collate(self, parts: Sequence[tuple[int, Any, Sequence[int] | np.ndarray]], *, pad_id: int) -> Any:
        raise NotImplementedError

    def task_losses(self, batch: Any) -> list[torch.Tensor]:
        raise NotImplementedError

    def predict_batch(self, batch: Any) -> torch.Tensor:
        """One prediction per row: a class index, or a float in the label range (regression)."""
        raise NotImplementedError

    # ---- shared ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def prefix_applied(self) -> Iterator[None]:
        """Attach the generator's current prefix to the attention layers for the block (if any)."""
        if self.prefix is None or self._prefix_attention is None:
            yield
            return
        with self._prefix_attention.apply(self.prefix()):
            yield

    @torch.no_grad()
    def predict_split(
        self, task_index: int, split: Any, *, batch_size: int, pad_id: int, device: torch.device | str
    ) -> np.ndarray:
        """Predictions for every row of a split, batched shortest rows first (less padding)."""
        predictions = np.zeros(len(split), dtype=np.float64)
        for rows in length_sorted_chunks([len(x) for x in split.input_ids], batch_size):
            batch = self.collate([(task_index, split, rows)], pad_id=pad_id).to(torch.device(device))
            predictions[rows] = self.predict_batch(batch).double().cpu().numpy()
        return predictions

    def peft_module(self) -> PeftModel | None:
        """The PEFT wrapper of the backbone, or None when the method has no LoRA."""
        backbone = self.backbone
        return backbone if isinstance(backbone, PeftModel) else None

    def is_adalora(self) -> bool:
        peft = self.peft_module()
        return peft is not None and isinstance(peft.peft_config.get("default"), AdaLoraConfig)

    def after_optimizer_step(self, global_step: int) -> None:
        """Method upkeep after ``optimizer.step()``, before ``zero_grad()`` (AdaLoRA's budget update)."""
        peft = self.peft_module()
        if peft is not None and self.is_adalora():
            cast(Any, peft.base_model).update_and_allocate(global_step)


    def regularization(self) -> torch.Tensor | None:
        """Extra loss terms of the method: AdaLoRA's orthogonality penalty on P and Q.

        PEFT adds it only when the wrapped model computes the loss itself; ours never
        does (we compute task losses outside), so the trainer adds this term.
        """
        peft = self.peft_module()
        if peft is None or not self.is_adalora():
            return None
        terms = []
        for name, p in peft.named_parameters():
            if p.requires_grad and ("lora_A" in name or "lora_B" in name):
                gram = p @ p.T if "lora_A" in name else p.T @ p
                terms.append(torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], device=gram.device)))
        if not terms:
            return None
        return ADALORA_ORTH_WEIGHT * torch.stack(terms).mean()

    def remember_trainable(self) -> None:
        """Fix the set of tensors a checkpoint holds (call once, after building).

        Sequential PEML schedules freeze LoRA or the prefix for a phase; a checkpoint
        written then must still hold them, so the set is remembered, not re-read.
        """
        self._trainable_names = frozenset(name for name, p in self.named_parameters() if p.requires_grad)

    def _checkpoint_names(self) -> frozenset[str]:
        names = getattr(self, "_trainable_names", None)
        if names is None:
            names = frozenset(name for name, p in self.named_parameters() if p.requires_grad)
        return names

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changed: LoRA, heads, and the prefix generator's whole state.

        The prefix's buffers (PrefixNAS's pruning masks) and its frozen parameters (α after
        discretization) belong to the trained state too, so they are kept under ``prefix.``.
        """
        names = self._checkpoint_names()
        state = {name: p.detach() for name, p in self.named_parameters() if name in names}
        if self.prefix is not None:
            state.update({f"prefix.{key}": value.detach() for key, value in self.prefix.state_dict().items()})
        return state

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a :meth:`trainable_state_dict`; every tensor it should hold must be present, nothing else.

        Raises:
            ValueError: names or shapes do not match this model.
        """
        params = dict(self.named_parameters())
        prefix_keys = {f"prefix.{key}" for key in self.prefix.state_dict()} if self.prefix is not None else set()
        expected = set(self._checkpoint_names()) | prefix_keys
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if self.prefix is not None:
            own = self.prefix.state_dict()
            for key in own:
                if own[key].shape != state[f"prefix.{key}"].shape:
                    raise ValueError(f"prefix.{key}: checkpoint shape {tuple(state[f'prefix.{key}'].shape)} != {tuple(own[key].shape)}")
            self.prefix.load_state_dict({key: state[f"prefix.{key}"] for key in own})
        with torch.no_grad():
            for name, tensor in state.items():
                if name in prefix_keys:
                    continue
                if params[name].shape != tensor.shape:
                    raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != {tuple(params[name].shape)}")
                params[name].copy_(tensor)

    def parameter_counts(self) -> tuple[int, int]:
        """``(trainable, total)`` parameter counts (shared tensors counted once)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return trainable, total
