"""Model families, detected from a model's config, and loading a base model for each.

- ``encoder``: BERT-style encoders, trained with one head per task (mean pooling);
- ``seq2seq``: encoder-decoders (``config.is_encoder_decoder``: T5, BART), text-to-text;
- ``causal``: decoder-only language models (Llama, Mistral, Qwen, GPT-2), text-to-text.

A config is causal when its architecture is a ``...ForCausalLM`` or when its model type
has a causal-LM class but no masked-LM class in transformers' auto mappings (BERT and
RoBERTa have both, and stay encoders).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

FAMILIES: tuple[str, ...] = ("encoder", "seq2seq", "causal")
TEXT2TEXT_FAMILIES = frozenset({"seq2seq", "causal"})

_LOADERS: dict[str, Any] = {"encoder": AutoModel, "seq2seq": AutoModelForSeq2SeqLM, "causal": AutoModelForCausalLM}


def detect_family(config: Any) -> str:
    """The family of a transformers config (see the module docstring)."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    architectures = getattr(config, "architectures", None) or []
    if any(str(a).endswith("ForCausalLM") for a in architectures):
        return "causal"
    model_type = getattr(config, "model_type", "")
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "causal"
    return "encoder"


def load_base(model_path: str, family: str) -> PreTrainedModel:
    """The pretrained model of a family in float32: an encoder, a seq2seq LM or a causal LM.

    Raises:
        ValueError: unknown family.
    """
    try:
        loader = _LOADERS[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}") from None
    model: PreTrainedModel = loader.from_pretrained(model_path, dtype=torch.float32)
    return model


def hidden_size(config: Any) -> int:
    """The model width (``hidden_size``, or T5's ``d_model``)."""
    value = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    if not isinstance(value, int):
        raise ValueError(f"cannot read the hidden size of a {type(config).__name__}")
    return value
