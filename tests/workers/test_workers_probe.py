"""Linear probing before fine-tuning (LP-FT): the heads fit the starting model's features; nothing else moves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tests.workers.helpers import STRICT_WARNINGS
from workers.batching import prepare_tokenizer
from workers.data import Example, TaskInfo
from workers.model import build_model
from workers.probe import cached_features, probe_heads

pytestmark = STRICT_WARNINGS

PAIRS = TaskInfo(name="pairs", kind="classification", labels=("different", "same"), metrics=("accuracy",), shape="pair",
                 label_type="str")
COUNTS = TaskInfo(name="counts", kind="regression", labels=(0.0, 5.0), metrics=("pearson",), shape="pair", label_type="float")


def _setup(path: Path) -> tuple[torch.nn.Module, list, int]:
    from searchsvc.spec import DEFAULT_HYPERPARAMETERS

    torch.manual_seed(0)
    model = build_model(str(path), method="lora", config={**DEFAULT_HYPERPARAMETERS, "lora_rank": 4}, tasks=[PAIRS, COUNTS],
                        total_steps=10, pair_encoding="separate")
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    words = ["alpha", "beta", "gamma", "river", "stone", "quick", "lazy", "bright", "cloud", "green"]
    pairs = [Example(f"{words[i % 10]} {words[(i + 3) % 10]}", f"{words[(i * 7) % 10]} {words[(i + 1) % 10]}", i % 2)
             for i in range(20)]
    counts = [Example(f"{words[i % 10]} {words[(i + 2) % 10]}", f"{words[(i + 5) % 10]}", float(i % 6)) for i in range(20)]
    splits = [model.encode_split(tokenizer, 0, pairs, max_seq_len=16), model.encode_split(tokenizer, 1, counts, max_seq_len=16)]
    return model, splits, int(tokenizer.pad_token_id)


def test_cached_features_are_the_eval_mode_embeddings_of_each_text(tiny_bert: Path) -> None:
    model, splits, pad = _setup(tiny_bert)
    model.eval()
    first, second, labels = cached_features(model, 0, splits[0], pad_id=pad, device=torch.device("cpu"))
    assert first.shape == second.shape == (20, model.encoder.config.hidden_size)
    assert labels.tolist() == [float(i % 2) for i in range(20)]
    ids = torch.tensor([splits[0].input_ids_b[3]])
    with torch.no_grad():
        alone = model.encode(ids, torch.ones_like(ids))[0]
    assert torch.allclose(second[3], alone, atol=1e-5)  # row 3's second text, encoded alone


def test_probing_lowers_each_heads_loss_and_moves_nothing_but_the_heads(tiny_bert: Path) -> None:
    model, splits, pad = _setup(tiny_bert)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = probe_heads(model, splits, epochs=30, lr=5e-2, batch_size=8, pad_id=pad, device=torch.device("cpu"))
    assert model.training  # left in the mode it came in
    for before_loss, after_loss in zip(result.loss_before, result.loss_after, strict=True):
        assert after_loss < before_loss
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("heads.") for n in changed), sorted(changed)
    # the regression head reads cos(u, v) through an affine map: probing fits that map by least squares,
    # so its loss ends near the closed-form optimum on these features
    first, second, labels = cached_features(model, 1, splits[1], pad_id=pad, device=torch.device("cpu"))
    cos = torch.nn.functional.cosine_similarity(first, second, dim=-1).double()
    target = labels.double() / 5.0
    design = torch.stack([cos, torch.ones_like(cos)], dim=1)
    solution = torch.linalg.lstsq(design, target.unsqueeze(1)).solution
    best_mse = float(((design @ solution).squeeze(1) - target).pow(2).mean())
    assert result.loss_after[1] == pytest.approx(best_mse, abs=0.01)
