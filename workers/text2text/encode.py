"""Token ids for text-to-text training and scoring: prompts, label texts and padded batches.

Two layouts, one per family:

- ``seq2seq`` (T5): the prompt is the encoder input; the label text plus EOS is the
  decoder's target, fed right-shifted after ``decoder_start_token_id``; ``labels`` holds
  the target ids and -100 on padding.
- ``causal`` (Llama): prompt and label text plus EOS are one sequence; ``labels`` equals
  the input ids on the label tokens and -100 on the prompt and the padding, aligned with
  ``input_ids`` (the scorer shifts by one: position t predicts token t + 1).

Either way the loss and the scores read exactly the label's tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from workers.data import Example
from workers.text2text.prompt import format_prompt
from workers.text2text.verbalize import Verbalizer

IGNORE_INDEX = -100
KINDS: tuple[str, ...] = ("seq2seq", "causal")


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the layouts need: padding, end of sequence, and T5's decoder start."""

    pad: int
    eos: int
    decoder_start: int | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, *, decoder_start: int | None = None) -> SpecialIds:
        """Read pad and EOS ids (EOS falls back to the SEP token).

        Raises:
            ValueError: the tokenizer has no pad token, or neither an EOS nor a SEP token.
        """
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if eos is None:
            raise ValueError("text-to-text training needs a tokenizer with an eos (or sep) token")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; call workers.batching.prepare_tokenizer first")
        return cls(pad=int(tokenizer.pad_token_id), eos=int(eos), decoder_start=decoder_start)


@dataclass(frozen=True)
class PromptSplit:
    """One task split as prompt ids, labels (class index or float) and the text index to train on."""

    input_ids: list[list[int]]
    labels: list[float] | list[int]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Text2TextBatch:
    """Padded tensors for one forward pass; ``segments[i]`` = (task index, start, end) rows.

    ``prompts`` keeps each row's unpadded prompt ids, from which the scorer builds one
    sequence per candidate label text.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    decoder_input_ids: torch.Tensor | None
    prompts: tuple[tuple[int, ...], ...]
    segments: tuple[tuple[int, int, int], ...]

    def to(self, device: torch.device) -> Text2TextBatch:
        return Text2TextBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            labels=self.labels.to(device),
            decoder_input_ids=None if self.decoder_input_ids is None else self.decoder_input_ids.to(device),
            prompts=self.prompts,
            segments=self.segments,
        )


def label_token_ids(tokenizer: PreTrainedTokenizerBase, verbalizer: Verbalizer, *, eos: int) -> tuple[tuple[int, ...], ...]:
    """Each label text's token ids (no special tokens) followed by EOS.

    Raises:
        ValueError: a text tokenizes to nothing, or two texts to the same ids (unknown tokens).
    """
    out: list[tuple[int, ...]] = []
    for text in verbalizer.texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if not ids:
            raise ValueError(f"label text {text!r} has no tokens")
        out.append((*ids, eos))
    if len(set(out)) != len(out):
        clash = [t for t, ids in zip(verbalizer.texts, out, strict=True) if out.count(ids) > 1]
        raise ValueError(
            f"label texts {clash} tokenize to the same ids (unknown to the tokenizer?); "
            "give distinct texts in meta.json 'verbalizer'"
        )
    return tuple(out)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    task: str,
    shape: str,
    verbalizer: Verbalizer,
    max_seq_len: int,
) -> PromptSplit:
    """Tokenise a split's prompts (truncated to ``max_seq_len``) and pick each row's target text."""
    prompts = [format_prompt(task, shape, e.text_a, e.text_b) for e in examples]
    enc = tokenizer(prompts, truncation=True, max_length=max_seq_len, return_attention_mask=False)
    labels = [e.label for e in examples]
    return PromptSplit(
        input_ids=[list(x) for x in enc["input_ids"]],
        labels=labels,  # type: ignore[arg-type]
        targets=[verbalizer.target(label) for label in labels],
    )


def pad_pairs(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    kind: str,
    special: SpecialIds,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(input_ids, attention_mask, labels, decoder_input_ids)`` for (prompt, target) pairs.

    Right padding throughout. ``decoder_input_ids`` is None for ``causal``.

    Raises:
        ValueError: unknown kind, no pairs, or a seq2seq model without a decoder start id.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown text-to-text kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not pairs:
        raise ValueError("cannot collate an empty batch")
    if kind == "causal":
        sequences = [list(p) + list(t) for p, t in pairs]
        targets = [[IGNORE_INDEX] * len(p) + list(t) for p, t in pairs]
        input_ids, attention = _pad(sequences, special.pad)
        labels, _ = _pad(targets, IGNORE_INDEX)
        return input_ids, attention, labels, None
    if special.decoder_start is None:
        raise ValueError("an encoder-decoder model needs decoder_start_token_id in its config")
    input_ids, attention = _pad([list(p) for p, _ in pairs], special.pad)
    labels, _ = _pad([list(t) for _, t in pairs], IGNORE_INDEX)
    decoder_inputs, _ = _pad([[special.decoder_start, *list(t)[:-1]] for _, t in pairs], special.pad)
    return input_ids, attention, labels, decoder_inputs


def _pad(rows: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return out, mask


def collate_prompts(
    parts: Sequence[tuple[int, PromptSplit, Sequence[int] | np.ndarray]],
    *,
    candidates: Sequence[Sequence[Sequence[int]]],
    kind: str,
    special: SpecialIds,
) -> Text2TextBatch:
    """One batch from ``(task index, split, row indices)`` parts; each row's target is its label text.

    ``candidates[task][i]`` are the token ids of text ``i`` of that task.
    """
    pairs: list[tuple[list[int], tuple[int, ...]]] = []
    segments: list[tuple[int, int, int]] = []
    for task, split, picked in parts:
        start = len(pairs)
        for r in picked:
            row = int(r)
            pairs.append((split.input_ids[row], tuple(candidates[task][split.targets[row]])))
        if len(pairs) > start:
            segments.append((task, start, len(pairs)))
    input_ids, attention, labels, decoder_inputs = pad_pairs(pairs, kind=kind, special=special)
    return Text2TextBatch(
        input_ids=input_ids,
        attention_mask=attention,
        labels=labels,
        decoder_input_ids=decoder_inputs,
        prompts=tuple(tuple(p) for p, _ in pairs),
        segments=tuple(segments),
    )
