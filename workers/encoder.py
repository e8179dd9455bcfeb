"""The encoder family (BERT-style): a frozen encoder, a PEFT method, and one head per task.

Pooling: every head reads the *mean of the last hidden states over non-padding tokens*,
which suits sentence-embedding checkpoints like all-MiniLM-L6-v2 (trained with exactly
this pooling) as well as plain BERT.

Regression heads learn the label scaled to [0, 1] (MSE there) and predict
``clamp(output, 0, 1)`` mapped back to the label range, so outputs always lie in range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from workers.batching import Batch, EncodedSplit, collate, encode_examples
from workers.data import Example
from workers.injection import PrefixAttention
from workers.multitask import MultiTaskBase
from workers.prefix import PrefixGenerator


@dataclass(frozen=True)
class HeadInfo:
    """What a task head needs: its kind and label values (classes, or the regression range)."""

    kind: str
    labels: tuple[Any, ...]

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadInfo:
        return cls(kind=str(data["kind"]), labels=tuple(data["labels"]))


class TaskHead(nn.Module):
    """Dropout + Linear on the pooled representation; owns its loss and its predictions."""

    def __init__(self, hidden_size: int, info: HeadInfo, *, dropout: float = 0.1) -> None:
        super().__init__()
        if info.kind not in ("classification", "regression"):
            raise ValueError(f"unknown head kind {info.kind!r}")
        self.kind = info.kind
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, info.num_outputs)
        low, high = (float(info.labels[0]), float(info.labels[1])) if info.kind == "regression" else (0.0, 1.0)
        self.low, self.high = low, high

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(pooled))

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.kind == "regression":
            target = (labels.float() - self.low) / (self.high - self.low)
            return nn.functional.mse_loss(outputs.squeeze(-1), target)
        return nn.functional.cross_entropy(outputs, labels.long())

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class indices, or regression values clipped to the label range."""
        if self.kind == "regression":
            return outputs.squeeze(-1).clamp(0.0, 1.0) * (self.high - self.low) + self.low
        return outputs.argmax(dim=-1)


class MultiTaskModel(MultiTaskBase):
    """Encoder (+ LoRA) (+ prefix) shared by all tasks, and one :class:`TaskHead` per task."""

    family = "encoder"

    def __init__(
        self,
        encoder: nn.Module,
        *,
        heads: Mapping[str, TaskHead],
        prefix: PrefixGenerator | None = None,
        prefix_attention: PrefixAttention | None = None,
        accepts_token_type_ids: bool = False,
    ) -> None:
        super().__init__(task_names=list(heads), prefix=prefix, prefix_attention=prefix_attention)
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads))
        self.accepts_token_type_ids = accepts_token_type_ids

    @property
    def backbone(self) -> nn.Module:
        return self.encoder

    def head(self, task: str) -> TaskHead:
        """The head of one task."""
        head = self.heads[task]
        assert isinstance(head, TaskHead)
        return head

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean-pooled last hidden states ``[batch, hidden]``, with the prefix applied if any."""
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.accepts_token_type_ids:
            inputs["token_type_ids"] = token_type_ids
        with self.prefix_applied():
            hidden = self.encoder(**inputs).last_hidden_state
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    # ---- the MultiTaskBase contract ----------------------------------------------------------

    def encode_split(
        self, tokenizer: PreTrainedTokenizerBase, task_index: int, examples: Sequence[Example], *, max_seq_len: int
    ) -> EncodedSplit:
        with_types = self.accepts_token_type_ids and "token_type_ids" in tokenizer.model_input_names
        return encode_examples(tokenizer, examples, max_seq_len=max_seq_len, with_token_types=with_types)

    def collate(self, parts: Sequence[tuple[int, Any, Sequence[int] | np.ndarray]], *, pad_id: int) -> Batch:
        return collate(parts, pad_id=pad_id)

    def task_losses(self, batch: Batch) -> list[torch.Tensor]:
        pooled = self.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        losses = []
        means = []
        for task, start, end in batch.segments:
            head = self.head(self.task_names[task])
            losses.append(head.loss(head(pooled[start:end]), batch.labels[start:end]))
            means.append(pooled[start:end].mean(dim=0))
        # Each task's mean representation in this step, for the task-similarity regularizer.
        self.last_task_means: list[torch.Tensor] = means
        return losses

    def predict_batch(self, batch: Batch) -> torch.Tensor:
        pooled = self.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        out = torch.empty(pooled.shape[0], dtype=torch.float32, device=pooled.device)
        for task, start, end in batch.segments:
            head = self.head(self.task_names[task])
            out[start:end] = head.predict(head(pooled[start:end])).float()
        return out
