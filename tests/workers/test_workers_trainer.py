"""The model-agnostic step: task_losses -> regularization -> backward_fn -> step -> step_hook."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, BertConfig, LlamaConfig, T5Config

from tests.workers.helpers import STRICT_WARNINGS
from workers.batching import prepare_tokenizer
from workers.data import Example, TaskInfo
from workers.family import detect_family
from workers.model import build_model
from workers.sampling import MultiTaskSampler
from workers.trainer import build_optimizer, default_backward, linear_warmup_decay, train_epoch
from workers.trial import resolve_config

pytestmark = STRICT_WARNINGS

TASKS = [
    TaskInfo(name="first", kind="classification", labels=(0, 1), metrics=("accuracy",), shape="single", label_type="int"),
    TaskInfo(name="second", kind="regression", labels=(0.0, 5.0), metrics=("pearson",), shape="single", label_type="float"),
]
ROWS = [
    [Example("alpha magic beta", None, 1), Example("cloud green", None, 0), Example("river stone", None, 1)],
    [Example("magic magic", None, 2.0), Example("quick lazy", None, 0.0), Example("magic", None, 1.0)],
]


def _setup(path: Path, method: str) -> dict[str, Any]:
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    torch.manual_seed(0)
    model = build_model(str(path), method=method, config=resolve_config({}), tasks=TASKS, total_steps=100, tokenizer=tokenizer)
    splits = [model.encode_split(tokenizer, i, rows, max_seq_len=16) for i, rows in enumerate(ROWS)]
    sampler = MultiTaskSampler([3, 3], batch_size=4, gammas=[0.5, 0.5], seed=0)
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.0, head_lr_scale=1.0)
    scheduler = linear_warmup_decay(optimizer, total_steps=4, warmup_ratio=0.0)
    return {
        "model": model,
        "splits": splits,
        "sampler": sampler,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "pad_id": tokenizer.pad_token_id,
        "device": torch.device("cpu"),
    }


@pytest.mark.parametrize(("family", "method"), [("bert", "adalora"), ("t5", "lora+prefix")])
def test_backward_fn_and_step_hook_contract(family: str, method: str, tiny_model_factory: Callable[[str], Path]) -> None:
    setup = _setup(tiny_model_factory(family), method)
    model = setup.pop("model")
    seen: list[tuple[int, bool]] = []
    hooks: list[dict[str, Any]] = []

    def backward(losses: list[torch.Tensor], extra: torch.Tensor | None) -> dict[str, float]:
        assert len(losses) == 2 and all(loss.dim() == 0 and loss.requires_grad for loss in losses)
        seen.append((len(seen), extra is not None))
        losses[0].backward()  # e.g. a coordinator weighting the tasks its own way
        return {"calls": float(len(seen))}

    def hook(**info: Any) -> None:
        grads = [p.grad for p in info["model"].parameters() if p.requires_grad]
        hooks.append({**info, "has_grads": any(g is not None for g in grads)})

    stats = train_epoch(model, backward_fn=backward, step_hook=hook, global_step=5, **setup)
    assert stats.steps == 2 and len(seen) == 2
    assert all(has_extra == (method == "adalora") for _, has_extra in seen)  # AdaLoRA's orthogonality term
    assert [h["step"] for h in hooks] == [5, 6]
    assert all(h["has_grads"] and h["model"] is model and len(h["losses"]) == 2 for h in hooks)
    assert all(isinstance(x, float) for h in hooks for x in h["losses"])
    assert stats.diagnostics == {"calls": 1.5}
    assert stats.loss == pytest.approx(sum(sum(h["losses"]) / 2 for h in hooks) / 2)
    assert all(p.grad is None for p in model.parameters())  # zero_grad after the hook


def test_default_backward_is_the_mean_plus_the_extra_term() -> None:
    weight = torch.tensor([1.0, 2.0], requires_grad=True)
    losses = [weight[0] * 3.0, weight[1] ** 2]
    default_backward(losses, weight.sum())
    assert weight.grad is not None
    torch.testing.assert_close(weight.grad, torch.tensor([1.5 + 1.0, 2.0 + 1.0]))


def test_family_detection(tiny_model_factory: Callable[[str], Path]) -> None:
    assert detect_family(BertConfig()) == "encoder"
    assert detect_family(T5Config()) == "seq2seq"
    assert detect_family(LlamaConfig()) == "causal"
    assert detect_family(BertConfig(architectures=["BertLMHeadModel"])) == "encoder"
    assert [detect_family(AutoConfig.from_pretrained(tiny_model_factory(f))) for f in ("bert", "t5", "llama")] == [
        "encoder",
        "seq2seq",
        "causal",
    ]
