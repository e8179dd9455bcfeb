"""Text-to-text: verbalizers, prompts, loss on the label tokens only, and scoring by label text."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from searchsvc.spec import TaskSpec
from tests.workers.helpers import STRICT_WARNINGS, write_task
from workers.data import Example, TaskInfo, load_task
from workers.text2text.encode import IGNORE_INDEX
from workers.text2text.prompt import format_prompt
from workers.text2text.scoring import decode_scores
from workers.text2text.verbalize import Verbalizer, class_texts, regression_bins
from workers.trial import resolve_config

pytestmark = STRICT_WARNINGS

CLASSIFY = TaskInfo(name="keyword", kind="classification", labels=(0, 1), metrics=("accuracy",), shape="single", label_type="int")
REGRESS = TaskInfo(name="counts", kind="regression", labels=(0.0, 5.0), metrics=("pearson",), shape="pair", label_type="float")
EXAMPLES = [
    Example("alpha magic beta", None, 1),
    Example("cloud green", None, 0),
    Example("river stone quick lazy bright", None, 1),
]
PAIRS = [Example("magic magic alpha", "beta", 2.0), Example("cloud", "green river", 0.4)]


def test_default_label_texts() -> None:
    assert class_texts([False, True], "bool") == ("no", "yes")
    assert class_texts([0, 1], "int") == ("no", "yes")
    assert class_texts([1, 0], "int") == ("yes", "no")
    assert class_texts(["entailment", "not_entailment"], "str") == ("yes", "no")
    assert class_texts(["entailment", "contradiction", "neutral"], "str") == ("entailment", "contradiction", "neutral")
    assert class_texts([0, 1, 2], "int") == ("0", "1", "2")
    assert class_texts([False, True], "bool", {"true": "right", "False": "wrong"}) == ("wrong", "right")
    assert class_texts([0, 1], "int", {"0": "bad", "1": "good"}) == ("bad", "good")
    with pytest.raises(ValueError, match="no text for label 1"):
        class_texts([0, 1], "int", {"0": "bad"})
    with pytest.raises(ValueError, match="repeat"):
        class_texts([0, 1], "int", {"0": "same", "1": "same"})


def test_regression_bins_and_nearest_targets() -> None:
    values, texts = regression_bins(0.0, 5.0)
    assert texts == ("0.0", "0.5", "1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0", "4.5", "5.0")
    assert values[5] == 2.5
    assert regression_bins(0.0, 10.0)[1][:3] == ("0", "1", "2")
    verbalizer = Verbalizer.for_task("regression", [0.0, 5.0])
    assert [verbalizer.target(x) for x in (0.0, 0.2, 0.3, 2.6, 5.0)] == [0, 0, 1, 5, 10]
    # Classification: argmax; regression: probability-weighted mean of the bin values.
    scores = torch.log(torch.tensor([[0.5, 0.5] + [0.0] * 9, [0.0] * 10 + [1.0]]).clamp(min=1e-30))
    torch.testing.assert_close(decode_scores(verbalizer, scores), torch.tensor([0.25, 5.0]))
    assert decode_scores(Verbalizer.for_task("classification", [0, 1]), torch.tensor([[-3.0, -1.0]])).tolist() == [1]


def test_meta_verbalizer_is_read_and_checked(tmp_path: Path) -> None:
    rows = [{"text_a": "p", "text_b": "h", "label": "entailment"}]
    meta = {
        "metric": "accuracy",
        "labels": ["entailment", "not_entailment"],
        "verbalizer": {"entailment": "true", "not_entailment": "false"},
    }
    task = load_task(TaskSpec(name="rte", path=str(write_task(tmp_path / "rte", train=rows, dev=rows, meta=meta))))
    assert task.info.make_verbalizer().texts == ("true", "false")
    assert TaskInfo.from_dict(task.info.to_dict()) == task.info
    bad = {**meta, "verbalizer": {"entailment": "true"}}
    folder = write_task(tmp_path / "bad", train=rows, dev=rows, meta=bad)
    with pytest.raises(ValueError, match=r"meta\.json: 'verbalizer' has no text for label 'not_entailment'"):
        load_task(TaskSpec(name="bad", path=str(folder)))


def test_prompts_start_with_the_task_name() -> None:
    assert (
        format_prompt("rte", "pair", "A man sleeps.", "Nobody sleeps.")
        == "rte sentence1: A man sleeps. sentence2: Nobody sleeps."
    )
    assert format_prompt("sst2", "single", "great film", None) == "sst2 sentence: great film"
    assert format_prompt("boolq", "boolq", "is it?", "It is.") == "boolq question: is it? passage: It is."


def _model(path: Path) -> Any:
    from workers.model import build_model

    model = build_model(
        str(path), method="lora+prefix", config=resolve_config({"prefix_length": 2}), tasks=[CLASSIFY, REGRESS], total_steps=4
    )
    model.eval()
    return model


@pytest.fixture(scope="module", params=["t5", "llama"])
def family_model(request: pytest.FixtureRequest, tiny_model_factory: Callable[[str], Path]) -> tuple[str, Any, Any]:
    path = tiny_model_factory(request.param)
    torch.manual_seed(0)
    return request.param, _model(path), AutoTokenizer.from_pretrained(path)


def test_labels_mark_exactly_the_target_tokens(family_model: tuple[str, Any, Any]) -> None:
    _, model, tokenizer = family_model
    split = model.encode_split(tokenizer, 0, EXAMPLES, max_seq_len=32)
    batch = model.collate([(0, split, [0, 1, 2])], pad_id=tokenizer.pad_token_id)
    texts = model.formats[0].candidates
    for row, example in enumerate(EXAMPLES):
        target = list(texts[int(example.label)])
        assert target[-1] == tokenizer.convert_tokens_to_ids("[SEP]")  # EOS closes every label text
        labels = batch.labels[row].tolist()
        prompt = split.input_ids[row]
        if model.kind == "causal":
            # prompt (-100) + target + padding (-100), aligned with input_ids
            assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
            assert labels[len(prompt) : len(prompt) + len(target)] == target
            assert batch.input_ids[row, len(prompt) : len(prompt) + len(target)].tolist() == target
            assert set(labels[len(prompt) + len(target) :]) <= {IGNORE_INDEX}
        else:
            assert labels[: len(target)] == target and set(labels[len(target) :]) <= {IGNORE_INDEX}
            start = model.lm.config.decoder_start_token_id
            assert batch.decoder_input_ids[row, : len(target)].tolist() == [start, *target[:-1]]
            assert batch.input_ids[row, : len(prompt)].tolist() == prompt


def test_loss_is_the_cross_entropy_of_the_target_tokens_only(family_model: tuple[str, Any, Any]) -> None:
    _, model, tokenizer = family_model
    splits = [model.encode_split(tokenizer, 0, EXAMPLES, max_seq_len=32), model.encode_split(tokenizer, 1, PAIRS, max_seq_len=32)]
    batch = model.collate([(0, splits[0], [0, 1, 2]), (1, splits[1], [0, 1])], pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        losses = model.task_losses(batch)
        with model.prefix_applied():
            if model.kind == "causal":
                logits = model.lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
                labels = batch.labels[:, 1:]
            else:
                logits = model.lm(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=batch.decoder_input_ids
                ).logits
                labels = batch.labels
    assert len(losses) == 2
    for (_, start, end), loss in zip(batch.segments, losses, strict=True):
        seg_logits, seg_labels = logits[start:end].reshape(-1, logits.shape[-1]), labels[start:end].reshape(-1)
        expected = torch.nn.functional.cross_entropy(seg_logits, seg_labels, ignore_index=IGNORE_INDEX)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def _manual_scores(model: Any, prompt: list[int], task: int) -> list[float]:
    """Each label text's summed token log-probability, one unbatched forward per text."""
    out = []
    for text in model.formats[task].candidates:
        text = list(text)
        with torch.no_grad(), model.prefix_applied():
            if model.kind == "causal":
                ids = torch.tensor([prompt + text])
                logp = model.lm(input_ids=ids).logits[0].log_softmax(-1)
                out.append(sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(text)))
            else:
                start = model.lm.config.decoder_start_token_id
                logp = model.lm(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([[start, *text[:-1]]])).logits[0]
                logp = logp.log_softmax(-1)
                out.append(sum(float(logp[i, t]) for i, t in enumerate(text)))
    return out


def test_scoring_picks_the_label_text_with_the_highest_log_probability(family_model: tuple[str, Any, Any]) -> None:
    _, model, tokenizer = family_model
    for task, examples in ((0, EXAMPLES), (1, PAIRS)):
        split = model.encode_split(tokenizer, task, examples, max_seq_len=32)
        with torch.no_grad():
            batched = model.candidate_scores(task, split.input_ids, device="cpu")
        predictions = model.predict_split(task, split, batch_size=8, pad_id=tokenizer.pad_token_id, device="cpu")
        model.max_scoring_rows = 1  # one prompt per forward pass: the same scores
        try:
            with torch.no_grad():
                torch.testing.assert_close(
                    model.candidate_scores(task, split.input_ids, device="cpu"), batched, rtol=1e-4, atol=1e-5
                )
        finally:
            model.max_scoring_rows = 256
        manual = _manual_scores(model, split.input_ids[0], task)  # one example, checked by hand
        torch.testing.assert_close(batched[0], torch.tensor(manual), rtol=1e-4, atol=1e-4)
        if task == 0:
            assert predictions[0] == max(range(len(manual)), key=manual.__getitem__)
            assert predictions.tolist() == batched.argmax(dim=-1).tolist()
        else:
            top = max(manual)
            weights = [math.exp(s - top) for s in manual]
            values = model.formats[1].verbalizer.values
            expected = sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)
            assert predictions[0] == pytest.approx(expected, rel=1e-4)
