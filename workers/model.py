"""Building the trainable multi-task model of a trial: base model, PEFT method, prefix, tasks.

Methods (``spec.method``):

- ``lora``:        LoRA (HF PEFT) on the attention projections;
- ``adalora``:     AdaLoRA (HF PEFT), whose rank budget shrinks over ``total_steps``;
- ``prefix``:      a plain key/value prefix (:class:`workers.prefix.PlainPrefix`);
- ``lora+prefix``: both;
- ``peml``:        LoRA and the searched prefix (``workers/nas``);
- ``head``:        nothing in the encoder: the frozen model with trained task heads (encoders) or,
                   text-to-text, the frozen model scoring label texts: the floor every method must clear.

The family (:mod:`workers.family`) decides the kind of model: an encoder gets one head per
task (:class:`workers.encoder.MultiTaskModel`); an encoder-decoder or a causal decoder is
trained text-to-text with no heads (:class:`workers.text2text.model.Text2TextModel`).
:func:`assemble_model` is the part shared with :mod:`workers.artifact`, which rebuilds the
same model around merged weights.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from peft import AdaLoraConfig, LoraConfig, get_peft_model
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from searchsvc.spec import PemlSpec
from workers.batching import prepare_tokenizer
from workers.data import TaskInfo
from workers.encoder import PAIR_ENCODINGS, HeadInfo, MultiTaskModel, TaskHead
from workers.family import TEXT2TEXT_FAMILIES, detect_family, hidden_size, load_base
from workers.injection import PrefixAttention
from workers.multitask import ADALORA_ORTH_WEIGHT, MultiTaskBase
from workers.nas import SearchedPrefix
from workers.prefix import PlainPrefix, PrefixGenerator
from workers.text2text.encode import SpecialIds
from workers.text2text.model import TaskFormat, Text2TextModel
from workers.text2text.verbalize import Verbalizer

__all__ = [
    "ADALORA_ORTH_WEIGHT",
    "HEAD_METHOD",
    "LORA_METHODS",
    "PREFIX_METHODS",
    "HeadInfo",
    "MultiTaskBase",
    "MultiTaskModel",
    "TaskHead",
    "Text2TextModel",
    "assemble_model",
    "build_model",
    "lora_target_modules",
    "resolve_pair_encoding",
]

# Files a sentence-transformers checkpoint carries beside its transformers files: such a
# model was trained as a bi-encoder (each text alone, then compared).
BI_ENCODER_MARKERS = ("config_sentence_transformers.json", "sentence_bert_config.json", "modules.json")

LORA_METHODS = frozenset({"lora", "lora+prefix", "adalora", "peml"})
PREFIX_METHODS = frozenset({"prefix", "lora+prefix", "peml"})
HEAD_METHOD = "head"  # the frozen encoder: only the task heads train

# Attention projection names per family, tried in order; the first pair fully present wins.
_TARGET_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("query", "value"),  # BERT, RoBERTa, MiniLM, ...
    ("q_proj", "v_proj"),  # Llama, Mistral, Qwen, OPT, ...
    ("q", "v"),  # T5
    ("q_lin", "v_lin"),  # DistilBERT
    ("query_proj", "value_proj"),  # DeBERTa-v2
)


def build_model(
    model_path: str,
    *,
    method: str,
    config: Mapping[str, Any],
    tasks: Sequence[TaskInfo],
    total_steps: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
    peml: PemlSpec | None = None,
    pair_encoding: str = "packed",
) -> MultiTaskBase:
    """Load the base model, freeze it, and add the method's trainable parts (and heads, for encoders).

    ``config`` is a resolved trial config (every key of ``DEFAULT_HYPERPARAMETERS``).
    ``tasks`` are in the study's order; ``total_steps`` is the planned number of optimizer
    steps (AdaLoRA's schedule needs it). ``tokenizer`` defaults to the model's own.
    ``peml``: the study's PrefixNAS settings (method ``peml``; defaults when None).
    ``pair_encoding``: ``packed`` or ``separate`` (resolved: see :func:`resolve_pair_encoding`).

    Raises:
        ValueError: unknown method, no LoRA target modules found in the model, or a
            method with nothing to train (``head`` on a text-to-text model).
    """
    if method not in LORA_METHODS | PREFIX_METHODS | {HEAD_METHOD}:
        raise ValueError(f"unknown method {method!r}")
    family = detect_family(AutoConfig.from_pretrained(model_path))
    if method == HEAD_METHOD and family in TEXT2TEXT_FAMILIES:
        raise ValueError(f"method 'head' trains task heads only, and a {family} model has none: use lora, prefix, ...")
    base = load_base(model_path, family)
    prefix_attention = PrefixAttention(base) if method in PREFIX_METHODS else None
    for p in base.parameters():
        p.requires_grad_(False)
    backbone: nn.Module = base
    if method in LORA_METHODS:
        with warnings.catch_warnings():
            # transformers 5 deprecates an alias PEFT still calls; not actionable here.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            backbone = get_peft_model(base, _lora_config(base, method, config, total_steps))
    prefix: PrefixGenerator | None = None
    if prefix_attention is not None:
        width = hidden_size(base.config)
        if method == "peml":
            # The searched generator: prefix vectors through DARTS cells (nas_cells of them).
            prefix = SearchedPrefix.from_spec(
                peml or PemlSpec(), length=int(config["prefix_length"]), hidden_size=width,
                slots=prefix_attention.slots, cells=int(config["nas_cells"]),
            )
        else:
            prefix = PlainPrefix(
                length=int(config["prefix_length"]), hidden_size=width, slots=prefix_attention.slots, bottleneck=width
            )
    if tokenizer is None and family in TEXT2TEXT_FAMILIES:
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(model_path))
    return assemble_model(
        backbone, base=base, family=family, tasks=tasks, tokenizer=tokenizer, prefix=prefix, prefix_attention=prefix_attention,
        pair_encoding=pair_encoding,
    )


def resolve_pair_encoding(requested: str, model_path: str) -> str:
    """``packed`` or ``separate`` for ``train.pair_encoding`` (``auto``, ``packed``, ``separate``).

    ``auto`` is ``separate`` for a bi-encoder checkpoint (a sentence-transformers folder,
    :data:`BI_ENCODER_MARKERS`: its embeddings were trained to be compared, and packing a
    pair into one sequence throws that away) and ``packed`` for anything else. Text-to-text
    models read a pair as one prompt: ``separate`` is refused for them.

    Raises:
        ValueError: ``separate`` for a text-to-text model, or an unknown value.
    """
    if requested not in ("auto", *PAIR_ENCODINGS):
        raise ValueError(f"train.pair_encoding must be auto, packed or separate, got {requested!r}")
    family = detect_family(AutoConfig.from_pretrained(model_path))
    if family in TEXT2TEXT_FAMILIES:
        if requested == "separate":
            raise ValueError(f"train.pair_encoding: separate needs an encoder model; {model_path!r} is {family}")
        return "packed"
    if requested != "auto":
        return requested
    folder = Path(model_path)
    return "separate" if any((folder / marker).is_file() for marker in BI_ENCODER_MARKERS) else "packed"


def assemble_model(
    backbone: nn.Module,
    *,
    base: PreTrainedModel,
    family: str,
    tasks: Sequence[TaskInfo],
    tokenizer: PreTrainedTokenizerBase | None,
    prefix: PrefixGenerator | None,
    prefix_attention: PrefixAttention | None,
    verbalizers: Mapping[str, Verbalizer] | None = None,
    pair_encoding: str = "packed",
) -> MultiTaskBase:
    """The multi-task model of a family around a ready backbone (``base``, maybe PEFT-wrapped).

    ``verbalizers`` fixes a task's label texts (an artifact's stored ones) instead of
    deriving them from its :class:`TaskInfo`. ``pair_encoding`` (encoders): ``separate``
    gives every pair task (any shape but ``single``) a head that reads both texts' embeddings.

    Raises:
        ValueError: a text-to-text family without a tokenizer.
    """
    if family in TEXT2TEXT_FAMILIES:
        if tokenizer is None:
            raise ValueError("a text-to-text model needs its tokenizer (for the label texts)")
        start = getattr(base.config, "decoder_start_token_id", None)
        if family == "seq2seq" and start is None:
            start = tokenizer.pad_token_id
        special = SpecialIds.from_tokenizer(tokenizer, decoder_start=start)
        chosen = verbalizers or {}
        formats = [TaskFormat.build(info, tokenizer, special, verbalizer=chosen.get(info.name)) for info in tasks]
        return Text2TextModel(
            backbone, kind=family, formats=formats, special=special, prefix=prefix, prefix_attention=prefix_attention
        )
    width = hidden_size(base.config)
    separate = pair_encoding == "separate"
    heads = {
        info.name: TaskHead(width, HeadInfo(kind=info.kind, labels=info.labels), pair=separate and info.shape != "single")
        for info in tasks
    }
    accepts_token_type_ids = "token_type_ids" in inspect.signature(base.forward).parameters
    return MultiTaskModel(
        backbone, heads=heads, prefix=prefix, prefix_attention=prefix_attention, accepts_token_type_ids=accepts_token_type_ids,
        pair_encoding=pair_encoding,
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


def _lora_config(model: nn.Module, method: str, config: Mapping[str, Any], total_steps: int) -> LoraConfig:
    targets = lora_target_modules(model)
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
