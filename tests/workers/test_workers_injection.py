"""The prefix in T5 (relative position bias, both stacks) and Llama (causal, grouped-query K/V).

Each attention layer's output with a prefix is checked against a softmax written out by
hand from the layer's own projections; outside the context manager the models compute
exactly what stock SDPA computes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from tests.workers.helpers import STRICT_WARNINGS
from workers.injection import PrefixAttention, find_attention_slots
from workers.prefix import AttentionSlot

pytestmark = STRICT_WARNINGS

PREFIX_LEN = 3
NEG = torch.finfo(torch.float32).min


def _random_prefix(slots: list[AttentionSlot], seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(s.kv_heads, PREFIX_LEN, s.head_dim, generator=gen),
            torch.randn(s.kv_heads, PREFIX_LEN, s.head_dim, generator=gen),
        )
        for s in slots
    ]


def _capture(module: torch.nn.Module) -> tuple[dict[str, Any], Any]:
    captured: dict[str, Any] = {}

    def hook(mod: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        captured.update(args=args, kwargs=kwargs, output=output)

    return captured, module.register_forward_hook(hook, with_kwargs=True)


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, additive: torch.Tensor, *, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale + additive)·v, back to ``[batch, tokens, heads · dim]``."""
    scores = q @ keys.transpose(-1, -2) * scale + additive
    out = scores.softmax(dim=-1) @ values
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    bsz, seq, width = x.shape
    return x.view(bsz, seq, heads, width // heads).transpose(1, 2)


def _with_prefix(k: torch.Tensor, v: torch.Tensor, pk: torch.Tensor, pv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    bsz = k.shape[0]
    return torch.cat([pk.expand(bsz, -1, -1, -1), k], dim=2), torch.cat([pv.expand(bsz, -1, -1, -1), v], dim=2)


@pytest.fixture(scope="module")
def t5(tiny_model_factory: Callable[[str], Path]) -> tuple[Any, Any]:
    path = tiny_model_factory("t5")
    model = AutoModelForSeq2SeqLM.from_pretrained(path)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def llama(tiny_model_factory: Callable[[str], Path]) -> tuple[Any, Any]:
    path = tiny_model_factory("llama")
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


def _t5_inputs(tokenizer: Any) -> dict[str, torch.Tensor]:
    enc = tokenizer(["alpha beta gamma delta river", "cloud green"], padding=True, return_tensors="pt")
    dec = tokenizer(["yes no yes", "no"], padding=True, return_tensors="pt", add_special_tokens=False)
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "decoder_input_ids": dec["input_ids"],
        "decoder_attention_mask": dec["attention_mask"],
    }


def test_slots_cover_t5_encoder_and_decoder_self_attention_and_llama(t5: tuple[Any, Any], llama: tuple[Any, Any]) -> None:
    t5_slots = find_attention_slots(t5[0])
    names = {id(m): n for n, m in t5[0].named_modules()}
    found = [names[id(module)] for module, _ in t5_slots]
    assert found == [f"{stack}.block.{i}.layer.0.SelfAttention" for stack in ("encoder", "decoder") for i in (0, 1)]
    assert all(slot == AttentionSlot(kv_heads=2, head_dim=16) for _, slot in t5_slots)
    llama_slots = find_attention_slots(llama[0])
    assert [slot.kv_heads for _, slot in llama_slots] == [1, 1]


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_t5_self_attention_with_position_bias_equals_hand_computation(t5: tuple[Any, Any], stack: str) -> None:
    model, tokenizer = t5
    attention = PrefixAttention(model)
    prefix = _random_prefix(attention.slots)
    layer = getattr(model, stack).block[0].layer[0].SelfAttention  # block 0 owns the relative bias
    assert layer.has_relative_attention_bias
    slot = 0 if stack == "encoder" else 2
    captured, handle = _capture(layer)
    inputs = _t5_inputs(tokenizer)
    with torch.no_grad(), attention.apply(prefix):
        model(**inputs, use_cache=False)
    handle.remove()

    hidden = captured["args"][0]
    bias = captured["output"][1]  # the layer's own relative position bias [1, H, T, T]
    mask = inputs["attention_mask" if stack == "encoder" else "decoder_attention_mask"].bool()
    bsz, seq, _ = hidden.shape
    with torch.no_grad():
        q, k, v = (_split(proj(hidden), layer.n_heads) for proj in (layer.q, layer.k, layer.v))
        keys, values = _with_prefix(k, v, *prefix[slot])
        visible = mask[:, None, None, :].expand(bsz, 1, seq, seq)
        if stack == "decoder":
            visible = visible & torch.ones(seq, seq, dtype=torch.bool).tril()
        visible = torch.cat([torch.ones(bsz, 1, seq, PREFIX_LEN, dtype=torch.bool), visible], dim=-1)
        full_bias = torch.cat([torch.zeros(1, layer.n_heads, seq, PREFIX_LEN), bias], dim=-1)
        additive = torch.where(visible, full_bias, NEG)
        expected = layer.o(_attend(q, keys, values, additive, scale=1.0))  # T5 does not scale q·k
    real = mask[:, :, None].float()  # rows of padded queries are irrelevant
    torch.testing.assert_close(captured["output"][0] * real, expected * real, rtol=1e-5, atol=1e-5)


def test_llama_causal_grouped_query_attention_equals_hand_computation(llama: tuple[Any, Any]) -> None:
    model, tokenizer = llama
    attention = PrefixAttention(model)
    prefix = _random_prefix(attention.slots, seed=3)
    layer = model.model.layers[1].self_attn
    captured, handle = _capture(layer)
    inputs = dict(tokenizer(["alpha beta gamma delta river", "cloud green"], padding=True, return_tensors="pt"))
    with torch.no_grad(), attention.apply(prefix):
        model(**inputs, use_cache=False)
    handle.remove()

    hidden = captured["kwargs"]["hidden_states"]
    cos, sin = captured["kwargs"]["position_embeddings"]
    mask = inputs["attention_mask"].bool()
    bsz, seq, _ = hidden.shape
    heads, kv_heads, dim = model.config.num_attention_heads, model.config.num_key_value_heads, layer.head_dim
    assert kv_heads < heads
    with torch.no_grad():
        q = _split(layer.q_proj(hidden), heads)
        k, v = _split(layer.k_proj(hidden), kv_heads), _split(layer.v_proj(hidden), kv_heads)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)  # the prefix keys get no rotation: they have no position
        keys, values = _with_prefix(k, v, *prefix[1])
        keys, values = (x.repeat_interleave(heads // kv_heads, dim=1) for x in (keys, values))
        visible = mask[:, None, None, :] & torch.ones(seq, seq, dtype=torch.bool).tril()
        visible = torch.cat([torch.ones(bsz, 1, seq, PREFIX_LEN, dtype=torch.bool), visible], dim=-1)
        additive = torch.zeros(visible.shape).masked_fill(~visible, float("-inf"))
        expected = layer.o_proj(_attend(q, keys, values, additive, scale=dim**-0.5))
    real = mask[:, :, None].float()
    torch.testing.assert_close(captured["output"][0] * real, expected * real, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_models_are_unchanged_outside_the_context(family: str, t5: tuple[Any, Any], llama: tuple[Any, Any]) -> None:
    model, tokenizer = t5 if family == "t5" else llama
    inputs = (
        _t5_inputs(tokenizer) if family == "t5" else dict(tokenizer(["alpha beta", "cloud"], padding=True, return_tensors="pt"))
    )
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        before = model(**inputs, use_cache=False).logits
    attention = PrefixAttention(model)
    with torch.no_grad():
        switched = model(**inputs, use_cache=False).logits
        with attention.apply(_random_prefix(attention.slots)):
            with_prefix = model(**inputs, use_cache=False).logits
        after = model(**inputs, use_cache=False).logits
    torch.testing.assert_close(switched, before)
    torch.testing.assert_close(after, before)
    assert not torch.allclose(with_prefix, before, atol=1e-4)
