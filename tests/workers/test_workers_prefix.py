"""The key/value prefix: exact attention arithmetic, padding, and no effect outside the context."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tests.workers.helpers import STRICT_WARNINGS
from workers.injection import PrefixAttention, find_attention_slots
from workers.prefix import AttentionSlot, PlainPrefix

pytestmark = STRICT_WARNINGS

PREFIX_LEN = 3


def _random_prefix(slots: list[AttentionSlot], seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(s.kv_heads, PREFIX_LEN, s.head_dim, generator=gen), torch.randn(s.kv_heads, PREFIX_LEN, s.head_dim, generator=gen))
        for s in slots
    ]


def _load(path: Path) -> tuple[Any, Any]:
    model = AutoModel.from_pretrained(path)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


def _batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    # The second row is shorter, so it carries padding.
    return dict(tokenizer(["alpha beta gamma delta river stone", "cloud green"], padding=True, return_tensors="pt"))


def test_attention_output_equals_hand_computation(tiny_bert: Path) -> None:
    model, tokenizer = _load(tiny_bert)
    attention = PrefixAttention(model)
    prefix = _random_prefix(attention.slots)
    layer = model.encoder.layer[1].attention.self  # BertSelfAttention of the second layer
    captured: dict[str, torch.Tensor] = {}

    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        captured["hidden"] = args[0]
        captured["out"] = output[0]

    handle = layer.register_forward_hook(hook, with_kwargs=True)
    batch = _batch(tokenizer)
    with torch.no_grad(), attention.apply(prefix):
        model(**batch)
    handle.remove()

    hidden, mask = captured["hidden"], batch["attention_mask"]
    bsz, seq, _ = hidden.shape
    heads, dim = layer.num_attention_heads, layer.attention_head_size

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(bsz, seq, heads, dim).transpose(1, 2)

    with torch.no_grad():
        q, k, v = split(layer.query(hidden)), split(layer.key(hidden)), split(layer.value(hidden))
    pk, pv = prefix[1]
    keys = torch.cat([pk.expand(bsz, -1, -1, -1), k], dim=2)
    values = torch.cat([pv.expand(bsz, -1, -1, -1), v], dim=2)
    # Additive mask: 0 for the prefix and real tokens, -inf for padding keys.
    visible = torch.cat([torch.ones(bsz, PREFIX_LEN, dtype=torch.long), mask], dim=1)
    additive = torch.zeros(bsz, 1, 1, PREFIX_LEN + seq).masked_fill(visible[:, None, None, :] == 0, float("-inf"))
    scores = q @ keys.transpose(-1, -2) / math.sqrt(dim) + additive
    expected = (scores.softmax(dim=-1) @ values).transpose(1, 2).reshape(bsz, seq, heads * dim)
    torch.testing.assert_close(captured["out"], expected, rtol=1e-5, atol=1e-5)


def test_padding_is_still_masked(tiny_bert: Path) -> None:
    model, tokenizer = _load(tiny_bert)
    attention = PrefixAttention(model)
    prefix = _random_prefix(attention.slots, seed=1)
    padded = _batch(tokenizer)
    alone = dict(tokenizer(["cloud green"], return_tensors="pt"))
    n_real = int(alone["attention_mask"].sum())
    assert padded["attention_mask"][1].sum() == n_real < padded["input_ids"].shape[1]
    with torch.no_grad(), attention.apply(prefix):
        in_batch = model(**padded).last_hidden_state[1, :n_real]
        by_itself = model(**alone).last_hidden_state[0]
    torch.testing.assert_close(in_batch, by_itself, rtol=1e-5, atol=1e-5)
    # And the padding tokens' embeddings really would change the result if attended:
    with torch.no_grad(), attention.apply(prefix):
        unmasked = model(input_ids=padded["input_ids"][1:], token_type_ids=padded["token_type_ids"][1:]).last_hidden_state
    assert not torch.allclose(unmasked[0, :n_real], by_itself, atol=1e-4)


def test_prefix_changes_output_and_model_is_unchanged_outside(tiny_bert: Path) -> None:
    model, tokenizer = _load(tiny_bert)
    batch = _batch(tokenizer)
    with torch.no_grad():
        before = model(**batch).last_hidden_state  # stock SDPA attention
    attention = PrefixAttention(model)
    generator = PlainPrefix(length=PREFIX_LEN, hidden_size=model.config.hidden_size, slots=attention.slots, bottleneck=16)
    with torch.no_grad():
        switched = model(**batch).last_hidden_state
        with attention.apply(generator()):
            with_prefix = model(**batch).last_hidden_state
        after = model(**batch).last_hidden_state
    torch.testing.assert_close(switched, before)
    torch.testing.assert_close(after, before)
    assert not torch.allclose(with_prefix, before, atol=1e-4)
    assert all(not hasattr(m, "_searchsvc_prefix_kv") for m in attention.modules)


def test_prefix_is_removed_even_when_the_forward_fails(tiny_bert: Path) -> None:
    model, _ = _load(tiny_bert)
    attention = PrefixAttention(model)
    with pytest.raises(RuntimeError, match="boom"), attention.apply(_random_prefix(attention.slots)):
        raise RuntimeError("boom")
    assert all(not hasattr(m, "_searchsvc_prefix_kv") for m in attention.modules)
    with pytest.raises(ValueError, match="attention slots"):
        with attention.apply(_random_prefix(attention.slots)[:1]):
            pass


def test_gradients_reach_the_prefix_generator(tiny_bert: Path) -> None:
    model, tokenizer = _load(tiny_bert)
    attention = PrefixAttention(model)
    generator = PlainPrefix(length=PREFIX_LEN, hidden_size=model.config.hidden_size, slots=attention.slots, bottleneck=16)
    with attention.apply(generator()):
        # (not .sum(): the sum of a LayerNorm output with unit gain is constant)
        model(**_batch(tokenizer)).last_hidden_state[:, 0].pow(2).sum().backward()
    assert generator.vectors.grad is not None and generator.vectors.grad.abs().sum() > 0


def test_causal_decoder_keeps_causality_and_grouped_kv(tiny_model_factory: Callable[[str], Path]) -> None:
    model, tokenizer = _load(tiny_model_factory("llama"))
    attention = PrefixAttention(model)
    assert [s.kv_heads for s in attention.slots] == [1, 1]  # one K/V head for two query heads
    prefix = _random_prefix(attention.slots)
    ids = tokenizer(["alpha beta gamma delta river"], return_tensors="pt")["input_ids"]
    changed = ids.clone()
    changed[0, -2] = tokenizer.convert_tokens_to_ids("stone")
    with torch.no_grad():
        plain = model(input_ids=ids).last_hidden_state
        with attention.apply(prefix):
            first = model(input_ids=ids).last_hidden_state
            second = model(input_ids=changed).last_hidden_state
            padded = model(**tokenizer(["alpha beta gamma delta river", "cloud"], padding=True, return_tensors="pt")).last_hidden_state
    # Tokens before the changed position cannot see it; the prefix is seen by all.
    torch.testing.assert_close(first[0, :-2], second[0, :-2])
    assert not torch.allclose(first[0, -2:], second[0, -2:], atol=1e-4)
    assert not torch.allclose(first[0, 0], plain[0, 0], atol=1e-4)
    torch.testing.assert_close(padded[0], first[0], rtol=1e-5, atol=1e-5)


def test_t5_encoder_self_attention_slots(tiny_model_factory: Callable[[str], Path]) -> None:
    model, tokenizer = _load(tiny_model_factory("t5"))
    encoder = model.get_encoder()
    # Only self-attention: T5's decoder cross-attention is left alone.
    assert len(find_attention_slots(model)) == 4
    attention = PrefixAttention(encoder)
    assert len(attention.slots) == 2
    batch = dict(tokenizer(["alpha beta gamma", "cloud"], padding=True, return_tensors="pt"))
    alone = dict(tokenizer(["cloud"], return_tensors="pt"))
    prefix = _random_prefix(attention.slots)
    with torch.no_grad():
        plain = encoder(**batch).last_hidden_state
        with attention.apply(prefix):
            with_prefix = encoder(**batch).last_hidden_state
            by_itself = encoder(**alone).last_hidden_state
    assert not torch.allclose(plain, with_prefix, atol=1e-4)
    n_real = alone["input_ids"].shape[1]
    torch.testing.assert_close(with_prefix[1, :n_real], by_itself[0], rtol=1e-5, atol=1e-5)


def test_generators_round_trip_through_the_registry() -> None:
    from workers.prefix import generator_from_spec, generator_spec, registered_generators

    assert registered_generators()["plain"] is PlainPrefix
    slots = [AttentionSlot(kv_heads=2, head_dim=4), AttentionSlot(kv_heads=1, head_dim=8)]
    original = PlainPrefix(length=3, hidden_size=8, slots=slots, bottleneck=5, dropout=0.1)
    spec = generator_spec(original)
    assert spec["name"] == "plain" and spec["module"] == "workers.prefix"
    assert spec["config"] == {
        "length": 3,
        "hidden_size": 8,
        "slots": [{"kv_heads": 2, "head_dim": 4}, {"kv_heads": 1, "head_dim": 8}],
        "bottleneck": 5,
        "dropout": 0.1,
    }
    rebuilt = generator_from_spec(spec)
    rebuilt.load_state_dict(original.state_dict())
    original.eval(), rebuilt.eval()
    for (k1, v1), (k2, v2) in zip(original(), rebuilt(), strict=True):
        torch.testing.assert_close(k1, k2)
        torch.testing.assert_close(v1, v2)


def test_registry_refuses_duplicates_and_unknown_names() -> None:
    from workers.prefix import PrefixGenerator, generator_from_spec, generator_spec, register_generator

    with pytest.raises(ValueError, match="already registered as 'plain'"):

        @register_generator("plain")
        class Impostor(PrefixGenerator):
            pass

    with pytest.raises(ValueError, match="lowercase"):
        register_generator("Plain")

    class Unregistered(PrefixGenerator):
        pass

    with pytest.raises(ValueError, match="not a registered prefix generator"):
        generator_spec(Unregistered(length=1, hidden_size=4, slots=[AttentionSlot(1, 4)]))
    with pytest.raises(ValueError, match="unknown prefix generator 'nope'"):
        generator_from_spec({"name": "nope", "module": "somewhere.else", "config": {}})
