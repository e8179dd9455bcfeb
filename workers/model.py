"""The trainable multi-task model: a frozen encoder, a PEFT method, and one head per task.

Methods (``spec.method``):

- ``lora``:        LoRA (HF PEFT) on the attention projections, plus the heads;
- ``adalora``:     AdaLoRA (HF PEFT), whose rank budget shrinks over ``total_steps``;
- ``prefix``:      a plain key/value prefix (:class:`workers.prefix.PlainPrefix`), plus heads;
- ``lora+prefix``: both.

Pooling: every head reads the *mean of the last hidden states over non-padding tokens*.
Mean pooling works for every family (an encoder's [CLS] is meaningless in a decoder such
as Llama, where only the last token has seen the sentence) and suits sentence-embedding
checkpoints like all-MiniLM-L6-v2, which were trained with exactly this pooling.

Regression heads learn the label scaled to [0, 1] (MSE there) and predict
``clamp(output, 0, 1)`` mapped back to the label range, so outputs always lie in range.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from peft import AdaLoraConfig, LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModel, PreTrainedModel

from workers.injection import PrefixAttention
from workers.prefix import PlainPrefix, PrefixGenerator

LORA_METHODS = frozenset({"lora", "lora+prefix", "adalora"})
PREFIX_METHODS = frozenset({"prefix", "lora+prefix"})

# Attention projection names per family, tried in order; the first pair fully present wins.
_TARGET_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("query", "value"),  # BERT, RoBERTa, MiniLM, ...
    ("q_proj", "v_proj"),  # Llama, Mistral, Qwen, OPT, ...
    ("q", "v"),  # T5
    ("q_lin", "v_lin"),  # DistilBERT
    ("query_proj", "value_proj"),  # DeBERTa-v2
)

ADALORA_ORTH_WEIGHT = 0.5  # PEFT's default orth_reg_weight


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


class MultiTaskModel(nn.Module):
    """Encoder (+ LoRA) (+ prefix) shared by all tasks, and one :class:`TaskHead` per task."""

    def __init__(
        self,
        encoder: nn.Module,
        *,
        heads: Mapping[str, TaskHead],
        prefix: PrefixGenerator | None = None,
        prefix_attention: PrefixAttention | None = None,
        accepts_token_type_ids: bool = False,
    ) -> None:
        super().__init__()
        if (prefix is None) != (prefix_attention is None):
            raise ValueError("prefix and prefix_attention go together")
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads))
        self.prefix = prefix
        self._prefix_attention = prefix_attention
        self.accepts_token_type_ids = accepts_token_type_ids

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
        if self.prefix is not None and self._prefix_attention is not None:
            with self._prefix_attention.apply(self.prefix()):
                hidden = self.encoder(**inputs).last_hidden_state
        else:
            hidden = self.encoder(**inputs).last_hidden_state
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changed (LoRA, prefix, heads): what a checkpoint must hold."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a :meth:`trainable_state_dict`; every trainable tensor must be present, nothing else.

        Raises:
            ValueError: names or shapes do not match this model.
        """
        params = dict(self.named_parameters())
        expected = {name for name, p in params.items() if p.requires_grad}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        with torch.no_grad():
            for name, tensor in state.items():
                if params[name].shape != tensor.shape:
                    raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != {tuple(params[name].shape)}")
                params[name].copy_(tensor)

    def parameter_counts(self) -> tuple[int, int]:
        """``(trainable, total)`` parameter counts (shared tensors counted once)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return trainable, total

    def is_adalora(self) -> bool:
        return isinstance(self.encoder, PeftModel) and isinstance(self.encoder.peft_config.get("default"), AdaLoraConfig)

    def adalora_step(self, global_step: int) -> None:
        """AdaLoRA's budget update; call after ``optimizer.step()`` and before ``zero_grad()``."""
        if self.is_adalora():
            assert isinstance(self.encoder, PeftModel)
            self.encoder.base_model.update_and_allocate(global_step)

    def regularization(self) -> torch.Tensor | None:
        """Extra loss terms of the method: AdaLoRA's orthogonality penalty on P and Q.

        PEFT adds it only when the wrapped model returns a ``loss``; our encoder returns
        hidden states, so the trainer adds this term itself.
        """
        if not self.is_adalora():
            return None
        terms = []
        for name, p in self.encoder.named_parameters():
            if p.requires_grad and ("lora_A" in name or "lora_B" in name):
                gram = p @ p.T if "lora_A" in name else p.T @ p
                terms.append(torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], device=gram.device)))
        if not terms:
            return None
        return ADALORA_ORTH_WEIGHT * torch.stack(terms).mean()


def build_model(
    model_path: str,
    *,
    method: str,
    config: Mapping[str, Any],
    heads: Mapping[str, HeadInfo],
    total_steps: int,
) -> MultiTaskModel:
    """Load the base model, freeze it, and add the method's trainable parts and the heads.

    ``config`` is a resolved trial config (every key of ``DEFAULT_HYPERPARAMETERS``).
    ``total_steps`` is the planned number of optimizer steps (AdaLoRA's schedule needs it).

    Raises:
        ValueError: unknown method, or no LoRA target modules found in the model.
    """
    if method not in LORA_METHODS | PREFIX_METHODS:
        raise ValueError(f"unknown method {method!r}")
    base = AutoModel.from_pretrained(model_path, dtype=torch.float32)
    # An encoder-decoder (T5) contributes its encoder only: the heads read encoder states.
    trunk: PreTrainedModel = base.get_encoder() if base.config.is_encoder_decoder else base
    prefix_attention = PrefixAttention(trunk) if method in PREFIX_METHODS else None
    hidden_size = int(getattr(base.config, "hidden_size", None) or base.config.d_model)
    accepts_token_type_ids = "token_type_ids" in inspect.signature(trunk.forward).parameters
    for p in trunk.parameters():
        p.requires_grad_(False)

    encoder: nn.Module = trunk
    if method in LORA_METHODS:
        with warnings.catch_warnings():
            # transformers 5 deprecates an alias PEFT still calls; not actionable here.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            encoder = get_peft_model(trunk, _lora_config(trunk, method, config, total_steps))

    prefix = None
    if prefix_attention is not None:
        prefix = PlainPrefix(
            length=int(config["prefix_length"]),
            hidden_size=hidden_size,
            slots=prefix_attention.slots,
            bottleneck=hidden_size,
        )
    task_heads = {name: TaskHead(hidden_size, info) for name, info in heads.items()}
    return MultiTaskModel(
        encoder,
        heads=task_heads,
        prefix=prefix,
        prefix_attention=prefix_attention,
        accepts_token_type_ids=accepts_token_type_ids,
    )


def lora_target_modules(model: nn.Module) -> list[str]:
    """Names of the attention projections LoRA should wrap, detected from the model's Linears.

    Raises:
        ValueError: no known family of projection names is present.
    """
    linear_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    for candidate in _TARGET_CANDIDATES:
        if set(candidate) <= linear_names:
            return list(candidate)
    raise ValueError(
        f"found no known attention projections among the Linear layers {sorted(linear_names)[:20]}; "
        f"known families: {_TARGET_CANDIDATES}"
    )


def _lora_config(encoder: nn.Module, method: str, config: Mapping[str, Any], total_steps: int) -> LoraConfig:
    targets = lora_target_modules(encoder)
    rank = int(config["lora_rank"])
    common: dict[str, Any] = {
        "lora_alpha": float(config["lora_alpha"]),
        "lora_dropout": float(config["lora_dropout"]),
        "target_modules": targets,
        "bias": "none",
    }
    if method != "adalora":
        return LoraConfig(r=rank, **common)
    total = max(1, int(total_steps))
    # AdaLoRA starts above the target rank and prunes down to it: warm up for the first
    # 10% of steps, allocate the budget in between, keep the final ranks for the last 20%.
    tinit, tfinal = int(0.1 * total), int(0.2 * total)
    if tinit >= total - tfinal:
        tinit, tfinal = 0, 0
    return AdaLoraConfig(
        init_r=max(rank + 1, math.ceil(1.5 * rank)),
        target_r=rank,
        total_step=total,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=1,
        **common,
    )

