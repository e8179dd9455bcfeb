"""Separate pair encoding (bi-encoders) and the loss balance between task kinds, with numbers worked by hand."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

import workers
from searchsvc.spec import parse_spec
from tests.workers.helpers import STRICT_WARNINGS, count_rows, pair_rows, write_task
from workers.balance import LossBalancer
from workers.batching import prepare_tokenizer
from workers.data import Example, TaskInfo
from workers.model import build_model, resolve_pair_encoding

pytestmark = STRICT_WARNINGS

CONFIG = {"lr": 1e-2, "prefix_length": 3, "lora_rank": 4, "lora_alpha": 8.0, "lora_dropout": 0.0}
PAIRS = TaskInfo(name="pairs", kind="classification", labels=("different", "same"), metrics=("accuracy",), shape="pair",
                 label_type="str")
COUNTS = TaskInfo(name="counts", kind="regression", labels=(0.0, 5.0), metrics=("pearson",), shape="pair", label_type="float")


def _model(path: Path, *, method: str = "lora+prefix", encoding: str = "separate") -> Any:
    from searchsvc.spec import DEFAULT_HYPERPARAMETERS

    model = build_model(str(path), method=method, config={**DEFAULT_HYPERPARAMETERS, **CONFIG}, tasks=[PAIRS, COUNTS],
                        total_steps=10, pair_encoding=encoding)
    with torch.no_grad():  # move LoRA's B and the prefix away from their zero start, so both matter
        for name, p in model.named_parameters():
            if p.requires_grad and not name.startswith("heads."):
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _examples() -> list[Example]:
    return [Example("alpha beta gamma", "river stone", 1), Example("quick lazy", "quick lazy bright cloud green", 0)]


def test_a_separate_pair_feeds_the_head_u_v_absdiff_product(tiny_bert: Path) -> None:
    torch.manual_seed(0)
    model = _model(tiny_bert)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_bert))
    split = model.encode_split(tokenizer, 0, _examples(), max_seq_len=32)
    assert split.input_ids_b is not None and split.token_type_ids is None
    assert split.input_ids[0] == tokenizer("alpha beta gamma")["input_ids"]  # each text alone, not packed
    assert split.input_ids_b[1] == tokenizer("quick lazy bright cloud green")["input_ids"]
    batch = model.collate([(0, split, [0, 1])], pad_id=tokenizer.pad_token_id)
    assert batch.input_ids.shape[0] == 4 and batch.pair_rows.tolist() == [2, 3]

    def embed(ids: list[int]) -> torch.Tensor:  # one text through the encoder alone, with the prefix
        tensor = torch.tensor([ids])
        return model.encode(tensor, torch.ones_like(tensor))[0]

    head = model.heads["pairs"]
    with torch.no_grad():
        losses = model.task_losses(batch)
        by_hand = []
        for row in range(2):
            u, v = embed(split.input_ids[row]), embed(split.input_ids_b[row])
            features = torch.cat([u, v, (u - v).abs(), u * v])
            by_hand.append(head.linear.weight @ features + head.linear.bias)
        expected = torch.nn.functional.cross_entropy(torch.stack(by_hand), torch.tensor([1, 0]))
    assert head.linear.in_features == 4 * u.shape[0]
    assert losses[0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_prefix_reaches_both_texts_of_a_pair(tiny_bert: Path) -> None:
    torch.manual_seed(1)
    model = _model(tiny_bert)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_bert))
    split = model.encode_split(tokenizer, 0, _examples(), max_seq_len=32)
    batch = model.collate([(0, split, [0, 1])], pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        before = model.encode(batch.input_ids, batch.attention_mask)
        for p in model.prefix.parameters():
            p.add_(0.5)
        after = model.encode(batch.input_ids, batch.attention_mask)
    for row in range(4):  # the first texts (rows 0, 1) and the second texts (rows 2, 3) all change
        assert not torch.allclose(before[row], after[row], atol=1e-4), row


def test_an_untrained_regression_pair_head_scores_the_cosine(tiny_bert: Path) -> None:
    torch.manual_seed(2)
    model = _model(tiny_bert, method="lora")
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_bert))
    examples = [Example("alpha beta", "alpha beta gamma", 4.0), Example("river", "quick lazy", 1.0)]
    split = model.encode_split(tokenizer, 1, examples, max_seq_len=32)
    batch = model.collate([(1, split, [0, 1])], pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        pooled = model.encode(batch.input_ids, batch.attention_mask)
        cosine = torch.nn.functional.cosine_similarity(pooled[:2], pooled[2:], dim=-1)
        predicted = model.predict_batch(batch)
    assert predicted.tolist() == pytest.approx((cosine.clamp(0, 1) * 5.0).tolist(), abs=1e-5)


def test_auto_encoding_follows_the_checkpoint_kind(tiny_model_factory: Callable[[str], Path], tmp_path: Path) -> None:
    bert = tiny_model_factory("bert")
    assert resolve_pair_encoding("auto", str(bert)) == "packed"
    bi_encoder = tmp_path / "bi-encoder"
    shutil.copytree(bert, bi_encoder)
    (bi_encoder / "modules.json").write_text("[]")
    assert resolve_pair_encoding("auto", str(bi_encoder)) == "separate"
    assert resolve_pair_encoding("packed", str(bi_encoder)) == "packed"
    t5 = str(tiny_model_factory("t5"))
    assert resolve_pair_encoding("auto", t5) == "packed"
    with pytest.raises(ValueError, match="pair_encoding: separate needs an encoder"):
        resolve_pair_encoding("separate", t5)


def test_a_separate_encoding_trial_exports_and_loads_predicting_the_same(tiny_bert: Path, tmp_path: Path) -> None:
    pairs = write_task(tmp_path / "pairs", train=pair_rows(40, seed=21), dev=pair_rows(12, seed=22),
                       meta={"metric": "accuracy", "labels": ["different", "same"], "label_type": "str"})
    counts = write_task(tmp_path / "counts", train=count_rows(40, seed=23), dev=count_rows(12, seed=24),
                        meta={"metric": "pearson", "labels": [0.0, 5.0], "label_type": "float"})
    spec = parse_spec({"name": "sep", "model": str(tiny_bert), "method": "lora+prefix",
                       "tasks": [{"name": "pairs", "path": str(pairs)}, {"name": "counts", "path": str(counts)}],
                       "train": {"max_epochs": 1, "batch_size": 8, "max_seq_len": 32, "pair_encoding": "separate"}})
    calls: list[tuple[dict[str, Any], str | None]] = []
    workers.run_trial(dict(CONFIG), spec=spec, report=lambda m, c: calls.append((m, c)), workdir=tmp_path / "work")
    assert calls[0][0]["separate_pairs"] == 1.0
    artifact = workers.export_artifact(calls[0][1], tmp_path / "artifact")
    assert json.loads((artifact / "searchsvc_artifact.json").read_text())["pair_encoding"] == "separate"
    predictor = workers.load(artifact)
    rows = [json.loads(line) for line in (counts / "dev.jsonl").read_text().splitlines()]
    got = predictor.predict("counts", rows)
    # the reported dev pearson of the checkpoint is what the artifact's predictions give
    import numpy as np

    labels = [r["label"] for r in rows]
    assert float(np.corrcoef(got, labels)[0, 1]) == pytest.approx(calls[0][0]["counts/pearson"], abs=1e-5)


# ---- loss balance --------------------------------------------------------------------------


def test_balanced_losses_pull_with_gradients_of_one_scale() -> None:
    """One regression output o=0.2 (target 0.8) and one 2-class logit pair [0, 0] (target class 0).

    Raw: MSE = 0.36, ∂/∂o = 2(0.2-0.8) = -1.2; CE = ln 2, ∂/∂z = [-0.5, 0.5], norm 0.7071.
    rms at the first step: w ∝ [1/√0.36, 1/√ln2] = [1.6667, 1.2011], normalised to mean 1:
    [1.1624, 0.8376]; gradient norms 1.1624·1.2 = 1.3949 and 0.8376·0.7071 = 0.5923.
    Scale the regression labels by 1/10 (a unit change, o=0.02, target 0.08): the raw MSE
    gradient falls 10x to 0.12, while the balanced ratio of the two pulls stays 2.355.
    """
    def grads(scale: float, mode: str) -> tuple[float, float]:
        o = torch.tensor(0.2 * scale, requires_grad=True)
        z = torch.zeros(2, requires_grad=True)
        losses = [(o - 0.8 * scale) ** 2, torch.nn.functional.cross_entropy(z.unsqueeze(0), torch.tensor([0]))]
        weighted = LossBalancer(2, mode=mode)(losses)
        torch.stack(weighted).sum().backward()
        return float(o.grad.abs()), float(z.grad.norm())

    assert grads(1.0, "none") == pytest.approx((1.2, 0.70711), rel=1e-4)
    assert grads(1.0, "rms") == pytest.approx((1.3949, 0.59226), rel=1e-3)
    assert grads(0.1, "none") == pytest.approx((0.12, 0.70711), rel=1e-4)
    # the regression-to-classification pull: 1.70 raw, 0.17 raw after the unit change; with rms
    # 2/(0.7071/√ln 2) = 2.355 in both units (0.22387 / 0.09507 at scale 0.1)
    assert grads(0.1, "rms") == pytest.approx((0.22387, 0.09507), rel=1e-3)
    for scale in (1.0, 0.1):
        reg, cls = grads(scale, "rms")
        assert reg / cls == pytest.approx(2 / (0.70711 / math.sqrt(math.log(2))), rel=1e-3)


def test_balancer_weights_follow_the_running_mean_and_resume_exactly() -> None:
    balancer = LossBalancer(2, mode="rms", decay=0.5)
    assert balancer.weights() == [1.0, 1.0]
    balancer([torch.tensor(0.04), torch.tensor(1.0)])  # first step: EMA == the losses (bias-corrected)
    w = [1 / math.sqrt(0.04), 1.0]
    assert balancer.weights() == pytest.approx([2 * w[0] / sum(w), 2 * w[1] / sum(w)])
    balancer([torch.tensor(0.16), torch.tensor(1.0)])  # EMA 0.5·0.02 + 0.5·0.16 = 0.09, bias-corrected /0.75
    ema0 = (0.5 * (0.5 * 0.04) + 0.5 * 0.16) / (1 - 0.5**2)
    w = [1 / math.sqrt(ema0), 1.0]
    assert balancer.weights() == pytest.approx([2 * w[0] / sum(w), 2 * w[1] / sum(w)])
    copy = LossBalancer(2, mode="rms", decay=0.5)
    copy.load_state_dict(balancer.state_dict())
    assert copy.weights() == balancer.weights()
    assert LossBalancer(2, mode="none")([torch.tensor(0.04), torch.tensor(1.0)])[0].item() == pytest.approx(0.04)
