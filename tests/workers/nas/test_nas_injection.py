"""A SearchedPrefix drives the unchanged injection on tiny models, and the model's loss trains α."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tests.workers.helpers import STRICT_WARNINGS
from workers.injection import PrefixAttention
from workers.nas.generator import SearchedPrefix

pytestmark = STRICT_WARNINGS


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_searched_prefix_through_the_injection(family: str, tiny_model_factory: Callable[[str], Path]) -> None:
    path = tiny_model_factory(family)
    model = AutoModel.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    attention = PrefixAttention(model)
    torch.manual_seed(0)
    # hidden 32 -> default width 32; Llama's one K/V head (GQA) comes through the slots.
    prefix = SearchedPrefix(length=4, hidden_size=model.config.hidden_size, slots=attention.slots, cells=2)
    batch = dict(tokenizer(["alpha beta gamma", "river stone cloud green"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        plain = model(**batch).last_hidden_state
    with attention.apply(prefix()):
        hidden = model(**batch).last_hidden_state
    assert hidden.shape == plain.shape
    assert not torch.allclose(hidden, plain)
    hidden.square().mean().backward()
    assert prefix.alpha.grad is not None and prefix.alpha.grad.abs().sum() > 0
    assert prefix.vectors.grad is not None and prefix.vectors.grad.abs().sum() > 0
