"""Tokenised tasks and padded batches.

Every split is tokenised once, up front, into plain lists; a training step then only
gathers rows and pads them. Rows of all tasks in one step go through the encoder as one
batch (one forward pass, not one per task), and ``segments`` says which rows belong to
which task so each head sees only its own.

Two pair encodings (``train.pair_encoding``):

- ``packed``: a pair is one sequence ``[CLS] a [SEP] b [SEP]`` (a cross-encoder);
- ``separate``: each text is its own sequence (a bi-encoder, how sentence-embedding
  checkpoints such as all-MiniLM-L6-v2 were trained). A batch then stacks the first texts
  of every row, followed by the second texts of the rows that have one, so both passes are
  one forward pass (and both see the prefix); ``Batch.pair_rows[i]`` is the stacked row
  of row i's second text, or -1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from workers.data import Example


@dataclass(frozen=True)
class EncodedSplit:
    """One task split as token ids (unpadded) and labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[float] | list[int]
    input_ids_b: list[list[int]] | None = None  # the second texts, encoded alone (separate pair encoding)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Batch:
    """Padded tensors for one encoder pass; ``segments[i]`` = (task index, start, end) rows."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    labels: torch.Tensor
    segments: tuple[tuple[int, int, int], ...]
    pair_rows: torch.Tensor | None = None  # separate pairs: stacked row of each row's second text, or -1

    @property
    def num_rows(self) -> int:
        """Labelled rows (the first ``num_rows`` encoder rows; any after them are second texts)."""
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> Batch:
        return Batch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            token_type_ids=None if self.token_type_ids is None else self.token_type_ids.to(device),
            labels=self.labels.to(device),
            segments=self.segments,
            pair_rows=None if self.pair_rows is None else self.pair_rows.to(device),
        )


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer without a pad token one (decoder tokenizers often lack it)."""
    if tokenizer.pad_token_id is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ValueError("the tokenizer has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    return tokenizer


def encode_examples(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    max_seq_len: int,
    with_token_types: bool,
    separate: bool = False,
) -> EncodedSplit:
    """Tokenise a split: pairs packed and truncated longest-first to ``max_seq_len``, or
    (``separate``) each text alone, each truncated to ``max_seq_len``."""
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b or "" for e in examples] if any(e.text_b is not None for e in examples) else None
    if separate:
        encode = lambda texts: list(tokenizer(texts, truncation=True, max_length=max_seq_len,  # noqa: E731
                                              return_attention_mask=False)["input_ids"])
        return EncodedSplit(input_ids=encode(texts_a), token_type_ids=None, labels=[e.label for e in examples],
                            input_ids_b=None if texts_b is None else encode(texts_b))
    enc = tokenizer(
        texts_a,
        texts_b,
        truncation=True,
        max_length=max_seq_len,
        return_token_type_ids=with_token_types,
        return_attention_mask=False,
    )
    token_types = enc.get("token_type_ids") if with_token_types else None
    labels = [e.label for e in examples]
    return EncodedSplit(input_ids=list(enc["input_ids"]), token_type_ids=token_types, labels=labels)  # type: ignore[arg-type]


def collate(parts: Sequence[tuple[int, EncodedSplit, Sequence[int] | np.ndarray]], *, pad_id: int) -> Batch:
    """One right-padded batch from ``(task index, split, row indices)`` parts, in order.

    Labels travel as float32 (class indices are exact in float32); heads cast back.
    Splits encoded ``separate`` add their second texts after all first texts (``pair_rows``).
    """
    ids: list[list[int]] = []
    seconds: list[list[int]] = []
    pair_rows: list[int] = []
    types: list[list[int]] = []
    labels: list[float] = []
    segments: list[tuple[int, int, int]] = []
    with_types = all(split.token_type_ids is not None for _, split, _ in parts)
    for task, split, picked in parts:
        start = len(ids)
        for r in picked:
            ids.append(split.input_ids[int(r)])
            if split.input_ids_b is not None:
                pair_rows.append(len(seconds))
                seconds.append(split.input_ids_b[int(r)])
            else:
                pair_rows.append(-1)
            if with_types and split.token_type_ids is not None:
                types.append(split.token_type_ids[int(r)])
            labels.append(float(split.labels[int(r)]))
        if len(ids) > start:
            segments.append((task, start, len(ids)))
    if not ids:
        raise ValueError("cannot collate an empty batch")
    rows = len(ids)
    if seconds:
        with_types = False  # each text alone: no segment ids
        ids = ids + seconds
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    token_types = torch.zeros((len(ids), width), dtype=torch.long) if with_types else None
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, : len(row)] = 1
        if token_types is not None:
            token_types[i, : len(row)] = torch.tensor(types[i], dtype=torch.long)
    return Batch(
        input_ids=input_ids,
        attention_mask=attention,
        token_type_ids=token_types,
        labels=torch.tensor(labels, dtype=torch.float32),
        segments=tuple(segments),
        pair_rows=torch.tensor([rows + p if p >= 0 else -1 for p in pair_rows], dtype=torch.long) if seconds else None,
    )


def length_sorted_chunks(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Row indices in chunks of ``batch_size``, shortest rows first (stable), for evaluation."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
