"""The text-to-text multi-task model: T5 or Llama (+ LoRA) (+ prefix) writing label texts.

One adapter serves every task: tasks differ only in their prompts and label texts, and
there are no heads. :meth:`Text2TextModel.task_losses` is the cross-entropy of each task
segment's label tokens; :meth:`Text2TextModel.candidate_scores` scores every label text
of a task for each row (an encoder-decoder encodes each prompt once and decodes all
texts against it; a decoder runs prompt + text for every pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from workers.data import Example, TaskInfo
from workers.injection import PrefixAttention
from workers.multitask import MultiTaskBase
from workers.prefix import PrefixGenerator
from workers.text2text.encode import (
    KINDS,
    PromptSplit,
    SpecialIds,
    Text2TextBatch,
    collate_prompts,
    encode_prompts,
    label_token_ids,
    pad_pairs,
)
from workers.text2text.scoring import decode_scores, segment_losses, token_logprobs
from workers.text2text.verbalize import Verbalizer


@dataclass(frozen=True)
class TaskFormat:
    """How one task is written: its shape (for the prompt), label texts and their token ids."""

    name: str
    shape: str
    verbalizer: Verbalizer
    candidates: tuple[tuple[int, ...], ...]

    @classmethod
    def build(
        cls, info: TaskInfo, tokenizer: PreTrainedTokenizerBase, special: SpecialIds, *, verbalizer: Verbalizer | None = None
    ) -> TaskFormat:
        """The format of a task; ``verbalizer`` defaults to the one its info implies."""
        verbalizer = verbalizer or info.make_verbalizer()
        return cls(
            name=info.name,
            shape=info.shape,
            verbalizer=verbalizer,
            candidates=label_token_ids(tokenizer, verbalizer, eos=special.eos),
        )


class Text2TextModel(MultiTaskBase):
    """A seq2seq or causal LM shared by all tasks; ``kind`` is ``"seq2seq"`` or ``"causal"``."""

    def __init__(
        self,
        lm: nn.Module,
        *,
        kind: str,
        formats: Sequence[TaskFormat],
        special: SpecialIds,
        prefix: PrefixGenerator | None = None,
        prefix_attention: PrefixAttention | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown text-to-text kind {kind!r}; choose one of {', '.join(KINDS)}")
        super().__init__(task_names=[f.name for f in formats], prefix=prefix, prefix_attention=prefix_attention)
        self.lm = lm
        self.kind = kind
        self.formats = tuple(formats)
        self.special = special
        self.max_scoring_rows = 256

    @property
    def family(self) -> str:  # type: ignore[override]
        return self.kind

    @property
    def backbone(self) -> nn.Module:
        return self.lm

    # ---- the MultiTaskBase contract ----------------------------------------------------------

    def encode_split(
        self, tokenizer: PreTrainedTokenizerBase, task_index: int, examples: Sequence[Example], *, max_seq_len: int
    ) -> PromptSplit:
        fmt = self.formats[task_index]
        return encode_prompts(
            tokenizer, examples, task=fmt.name, shape=fmt.shape, verbalizer=fmt.verbalizer, max_seq_len=max_seq_len
        )

    def collate(self, parts: Sequence[tuple[int, Any, Sequence[int] | np.ndarray]], *, pad_id: int) -> Text2TextBatch:
        special = self.special if pad_id == self.special.pad else SpecialIds(pad_id, self.special.eos, self.special.decoder_start)
        return collate_prompts(parts, candidates=[f.candidates for f in self.formats], kind=self.kind, special=special)

    def task_losses(self, batch: Text2TextBatch) -> list[torch.Tensor]:
        logprobs, mask = self.target_logprobs(batch.input_ids, batch.attention_mask, batch.labels, batch.decoder_input_ids)
        return segment_losses(logprobs, mask, batch.segments)

    def predict_batch(self, batch: Text2TextBatch) -> torch.Tensor:
        out = torch.empty(len(batch.prompts), dtype=torch.float32, device=batch.input_ids.device)
        for task, start, end in batch.segments:
            scores = self.candidate_scores(task, batch.prompts[start:end], device=batch.input_ids.device)
            out[start:end] = decode_scores(self.formats[task].verbalizer, scores).float()
        return out

    # ---- text-to-text specifics ----------------------------------------------------------

    def target_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        decoder_input_ids: torch.Tensor | None = None,
        *,
        encoder_hidden: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities of the ``labels`` tokens (and their mask), prefix applied.

        ``encoder_hidden`` (seq2seq only) reuses encoder states instead of ``input_ids``.
        """
        with self.prefix_applied():
            if self.kind == "causal":
                logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
                return token_logprobs(logits, labels, shift=True)
            encoder_outputs = None if encoder_hidden is None else BaseModelOutput(last_hidden_state=encoder_hidden)
            logits = self.lm(
                input_ids=None if encoder_hidden is not None else input_ids,
                attention_mask=attention_mask,
                encoder_outputs=encoder_outputs,
                decoder_input_ids=decoder_input_ids,
                use_cache=False,
            ).logits
        return token_logprobs(logits, labels, shift=False)

    def candidate_scores(self, task: int, prompts: Sequence[Sequence[int]], *, device: torch.device | str) -> torch.Tensor:
        """``[rows, texts]``: the summed log-probability of each label text of ``task`` after each prompt.

        At most :attr:`max_scoring_rows` (prompt, text) sequences go through one forward
        pass, which bounds the ``[rows, tokens, vocabulary]`` logits of a large model.
        """
        count = len(self.formats[task].candidates)
        per_call = max(1, self.max_scoring_rows // count)
        chunks = [self._score_chunk(task, prompts[i : i + per_call], device) for i in range(0, len(prompts), per_call)]
        return torch.cat(chunks) if chunks else torch.empty(0, count, device=device)

    def _score_chunk(self, task: int, prompts: Sequence[Sequence[int]], device: torch.device | str) -> torch.Tensor:
        candidates = self.formats[task].candidates
        count = len(candidates)
        pairs = [(p, c) for p in prompts for c in candidates]  # row-major: prompt b, text c at b * count + c
        input_ids, attention, labels, decoder_inputs = pad_pairs(pairs, kind=self.kind, special=self.special)
        input_ids, attention, labels = input_ids.to(device), attention.to(device), labels.to(device)
        if self.kind == "causal":
            logprobs, _ = self.target_logprobs(input_ids, attention, labels)
        else:
            assert decoder_inputs is not None
            # Encode each prompt once (every count-th row), then decode every text against its states.
            prompt_ids, prompt_mask = input_ids[::count], attention[::count]
            with self.prefix_applied():
                hidden = cast(Any, self.lm).get_encoder()(input_ids=prompt_ids, attention_mask=prompt_mask).last_hidden_state
            logprobs, _ = self.target_logprobs(
                input_ids,
                attention,
                labels,
                decoder_inputs.to(device),
                encoder_hidden=hidden.repeat_interleave(count, dim=0),
            )
        return logprobs.sum(dim=-1).view(len(prompts), count)
