"""The encoder family (BERT-style): a frozen encoder, a PEFT method, and one head per task.

Pooling: every head reads the *mean of the last hidden states over non-padding tokens*,
which suits sentence-embedding checkpoints like all-MiniLM-L6-v2 (trained with exactly
this pooling) as well as plain BERT.

Pairs encoded ``separate`` (see :mod:`workers.batching`) give a head two embeddings u and
v: a classification head reads ``[u, v, |u−v|, u·v]`` (Sentence-BERT's features plus the
product); a regression head reads ``cos(u, v)`` through a learned affine map that starts
at the identity, so an untrained head already scores what the frozen bi-encoder scores
zero-shot, and training can only start from there.

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


PAIR_FEATURES = 4  # [u, v, |u-v|, u*v]


class TaskHead(nn.Module):
    """Dropout + Linear on the pooled representation; owns its loss and its predictions.

    ``pair=True``: the task's pairs are encoded separately and the head reads both
    embeddings (module docstring); ``forward(u, v)``.
    """

    def __init__(self, hidden_size: int, info: HeadInfo, *, dropout: float = 0.1, pair: bool = False) -> None:
        super().__init__()
        if info.kind not in ("classification", "regression"):
            raise ValueError(f"unknown head kind {info.kind!r}")
        self.kind = info.kind
        self.pair = pair
        self.dropout = nn.Dropout(dropout)
        if pair and info.kind == "regression":
            self.linear = nn.Linear(1, 1)  # on cos(u, v): identity at start
            with torch.no_grad():
                self.linear.weight.fill_(1.0)
                self.linear.bias.zero_()
        else:
            self.linear = nn.Linear(hidden_size * (PAIR_FEATURES if pair else 1), info.num_outputs)
        low, high = (float(info.labels[0]), float(info.labels[1])) if info.kind == "regression" else (0.0, 1.0)
        self.low, self.high = low, high

    def forward(self, pooled: torch.Tensor, second: torch.Tensor | None = None) -> torch.Tensor:
        if not self.pair:
            return self.linear(self.dropout(pooled))
        if second is None:
            raise ValueError("a pair head needs both texts' embeddings")
        if self.kind == "regression":
            return self.linear(nn.functional.cosine_similarity(pooled, second, dim=-1).unsqueeze(-1))
        features = torch.cat([pooled, second, (pooled - second).abs(), pooled * second], dim=-1)
        return self.linear(self.dropout(features))

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


PAIR_ENCODINGS: tuple[str, ...] = ("packed", "separate")


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
        pair_encoding: str = "packed",
    ) -> None:
        super().__init__(task_names=list(heads), prefix=prefix, prefix_attention=prefix_attention)
        if pair_encoding not in PAIR_ENCODINGS:
            raise ValueError(f"pair_encoding must be one of {PAIR_ENCODINGS}, got {pair_encoding!r}")
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads))
        self.accepts_token_type_ids = accepts_token_type_ids
        self.pair_encoding = pair_encoding
        self._frozen: bool | None = None  # decided at the first pass, once every flag is set
        self._features: dict[tuple[tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}

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
        """Mean-pooled last hidden states ``[batch, hidden]``, with the prefix applied if any.

        A model whose encoder has nothing to train (method ``head``) computes each distinct
        text once, in eval mode (the features a linear probe reads), and reuses it: training
        its heads then costs one encoder pass over the data, not one per epoch and step.
        """
        if self._frozen_features():
            return self._cached_encode(input_ids, attention_mask, token_type_ids)
        return self._encode_now(input_ids, attention_mask, token_type_ids)

    def _frozen_features(self) -> bool:
        if self._frozen is None:
            self._frozen = self.prefix is None and not any(p.requires_grad for p in self.encoder.parameters())
        return self._frozen

    def _cached_encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        keys = []
        for row in range(input_ids.shape[0]):
            length = int(attention_mask[row].sum())
            types = () if token_type_ids is None else tuple(token_type_ids[row, :length].tolist())
            keys.append((tuple(input_ids[row, :length].tolist()), types))
        missing = sorted({i for i, key in enumerate(keys) if key not in self._features}, key=lambda i: keys[i])
        missing = list({keys[i]: i for i in missing}.values())  # one pass per distinct text
        if missing:
            index = torch.tensor(missing, device=input_ids.device)
            was_training = self.encoder.training
            self.encoder.eval()
            with torch.no_grad():
                fresh = self._encode_now(input_ids[index], attention_mask[index],
                                         None if token_type_ids is None else token_type_ids[index])
            self.encoder.train(was_training)
            for i, vector in zip(missing, fresh, strict=True):
                self._features[keys[i]] = vector
        return torch.stack([self._features[key] for key in keys])

    def _encode_now(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
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
        separate = self.pair_encoding == "separate" and self.head(self.task_names[task_index]).pair
        return encode_examples(tokenizer, examples, max_seq_len=max_seq_len, with_token_types=with_types, separate=separate)

    def collate(self, parts: Sequence[tuple[int, Any, Sequence[int] | np.ndarray]], *, pad_id: int) -> Batch:
        return collate(parts, pad_id=pad_id)

    def _head_outputs(self, batch: Batch) -> list[tuple[TaskHead, torch.Tensor, torch.Tensor, int, int]]:
        """One encoder pass over the batch; per segment ``(head, outputs, first-text embeddings, start, end)``."""
        pooled = self.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        out = []
        for task, start, end in batch.segments:
            head = self.head(self.task_names[task])
            first = pooled[start:end]
            second = None
            if head.pair:
                if batch.pair_rows is None:
                    raise ValueError(f"task {self.task_names[task]!r} has a pair head but its batch was packed")
                second = pooled[batch.pair_rows[start:end]]
            out.append((head, head(first, second), first, start, end))
        return out

    def task_losses(self, batch: Batch) -> list[torch.Tensor]:
        parts = self._head_outputs(batch)
        losses = [head.loss(outputs, batch.labels[start:end]) for head, outputs, _, start, end in parts]
        # Each task's mean representation in this step, for the task-similarity regularizer.
        self.last_task_means: list[torch.Tensor] = [first.mean(dim=0) for _, _, first, _, _ in parts]
        return losses

    def predict_batch(self, batch: Batch) -> torch.Tensor:
        out = torch.empty(batch.num_rows, dtype=torch.float32, device=batch.labels.device)
        for head, outputs, _, start, end in self._head_outputs(batch):
            out[start:end] = head.predict(outputs).float()
        return out
