"""Every family end to end: a trial on a classification and a regression task, then export and load.

One trial per family (module-scoped, reused by the export checks) keeps the suite fast.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import workers
from searchsvc.spec import parse_spec
from tests.workers.helpers import STRICT_WARNINGS, count_rows, keyword_rows, write_task
from workers.checkpoint import WEIGHTS_FILE, load_checkpoint
from workers.data import load_spec_tasks
from workers.export import ADAPTER_DIR, ARTIFACT_FILE, MERGED_DIR

pytestmark = STRICT_WARNINGS

FAMILIES = ["bert", "t5", "llama"]
REQUIRED = {"epoch", "avg_dev_score", "train_loss", "epoch_seconds", "trainable_params", "total_params", "lr"}
TASK_KEYS = {"keyword/score", "keyword/accuracy", "keyword/train_loss", "counts/score", "counts/pearson", "counts/spearman"}


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-tasks")
    return {
        "keyword": write_task(
            root / "keyword",
            train=keyword_rows(32, seed=11),
            dev=keyword_rows(16, seed=12),
            meta={"metric": "accuracy", "labels": [0, 1], "label_type": "int"},
        ),
        "counts": write_task(
            root / "counts",
            train=count_rows(32, seed=13),
            dev=count_rows(16, seed=14),
            meta={"metric": ["pearson", "spearman"], "labels": [0.0, 5.0], "label_type": "float"},
        ),
    }


@pytest.fixture(scope="module", params=FAMILIES)
def trained(
    request: pytest.FixtureRequest,
    tiny_model_factory: Callable[[str], Path],
    two_tasks: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    family = request.param
    spec = parse_spec(
        {
            "name": f"export-{family}",
            "model": str(tiny_model_factory(family)),
            "method": "lora+prefix",
            "tasks": [{"name": name, "path": str(path)} for name, path in two_tasks.items()],
            "train": {"max_epochs": 2, "patience": 2, "batch_size": 16, "max_seq_len": 32, "seed": 0},
        }
    )
    calls: list[tuple[dict[str, float], str | None]] = []
    workdir = tmp_path_factory.mktemp(f"trial-{family}")
    workers.run_trial(
        {"lr": 1e-2, "prefix_length": 4, "lora_rank": 4},
        spec=spec,
        report=lambda m, c: calls.append((dict(m), c)),
        workdir=workdir,
    )
    checkpoint = [c for _, c in calls if c][-1]
    return {
        "family": family,
        "spec": spec,
        "calls": calls,
        "checkpoint": checkpoint,
        "root": tmp_path_factory.mktemp(f"art-{family}"),
    }


def test_trial_reports_every_key_and_the_loss_falls(trained: dict[str, Any]) -> None:
    calls = trained["calls"]
    assert [m["epoch"] for m, _ in calls] == [1, 2]
    for metrics, _ in calls:
        assert REQUIRED | TASK_KEYS <= set(metrics)
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values())
        assert 0 < metrics["trainable_params"] < metrics["total_params"]
        assert -1.0 <= metrics["counts/pearson"] <= 1.0
    assert calls[1][0]["train_loss"] < calls[0][0]["train_loss"]
    info = json.loads((Path(trained["checkpoint"]) / "checkpoint.json").read_text())
    assert info["family"] == {"bert": "encoder", "t5": "seq2seq", "llama": "causal"}[trained["family"]]
    assert [t["name"] for t in info["tasks"]] == ["keyword", "counts"]


def _rows(spec: Any) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for task in spec.tasks:
        with open(Path(task.path) / "dev.jsonl", encoding="utf-8") as handle:
            out[task.name] = [json.loads(line) for line in handle]
    return out


def test_export_then_load_predicts_exactly_like_the_trained_model(trained: dict[str, Any]) -> None:
    spec = trained["spec"]
    out = workers.export_artifact(trained["checkpoint"], trained["root"] / "artifact")
    assert {p.name for p in out.iterdir()} >= {ARTIFACT_FILE, MERGED_DIR, ADAPTER_DIR, "prefix.json", "prefix.safetensors"}
    manifest = json.loads((out / ARTIFACT_FILE).read_text())
    assert manifest["method"] == "lora+prefix" and manifest["prefix"]["name"] == "plain"
    assert [t["name"] for t in manifest["tasks"]] == ["keyword", "counts"]
    assert (out / "heads.safetensors").is_file() == (trained["family"] == "bert")

    # The trained model in memory (LoRA unmerged), predicting every dev row.
    loaded = load_checkpoint(trained["checkpoint"])
    from transformers import AutoTokenizer

    from workers.batching import prepare_tokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(spec.model))
    tasks = load_spec_tasks(spec)
    expected = {}
    for index, task in enumerate(tasks):
        split = loaded.model.encode_split(tokenizer, index, task.dev, max_seq_len=32)
        raw = loaded.model.predict_split(index, split, batch_size=5, pad_id=tokenizer.pad_token_id, device="cpu")
        expected[task.name] = [task.labels[int(p)] for p in raw] if task.kind == "classification" else list(raw)

    # Neither the task folders nor the base model are needed: the artifact carries everything.
    rows = _rows(spec)
    hidden = [Path(task.path) for task in spec.tasks] + [Path(spec.model)]
    for path in hidden:
        path.rename(path.with_name(path.name + ".away"))
    try:
        predictor = workers.load(out)
        assert predictor.tasks == ["keyword", "counts"]
        got = {name: predictor.predict(name, rows[name]) for name in predictor.tasks}
    finally:
        for path in hidden:
            path.with_name(path.name + ".away").rename(path)
    assert got["keyword"] == expected["keyword"]
    assert all(isinstance(v, int) for v in got["keyword"])
    assert all(isinstance(v, float) and 0.0 <= v <= 5.0 for v in got["counts"])
    assert got["counts"] == pytest.approx(expected["counts"], abs=1e-4)


def test_adapter_loads_with_stock_peft_and_holds_the_trained_lora(trained: dict[str, Any]) -> None:
    from peft import PeftModel

    from workers.family import load_base

    out = trained["root"] / "adapter-check"
    workers.export_artifact(trained["checkpoint"], out)
    manifest = json.loads((out / ARTIFACT_FILE).read_text())
    assert {p.name for p in (out / ADAPTER_DIR).iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    base = load_base(trained["spec"].model, manifest["family"])  # AutoModel / AutoModelForSeq2SeqLM / ...ForCausalLM
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(base, str(out / ADAPTER_DIR))
    trained_lora = {k: v for k, v in load_file(str(Path(trained["checkpoint"]) / WEIGHTS_FILE)).items() if ".lora_" in k}
    loaded_lora = {k: v for k, v in peft_model.state_dict().items() if ".lora_" in k}
    assert trained_lora and len(trained_lora) == len(loaded_lora)
    for name, tensor in trained_lora.items():
        suffix = name.split("base_model.model.", 1)[1]  # ours: "<encoder|lm>.base_model.model.<module path>"
        matches = [k for k in loaded_lora if k.endswith(suffix)]
        assert len(matches) == 1, name
        torch.testing.assert_close(loaded_lora[matches[0]], tensor, rtol=0, atol=0)


def test_adalora_artifact_predicts_like_the_trained_model(tiny_bert: Path, two_tasks: dict[str, Path], tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    spec = parse_spec(
        {
            "name": "adalora",
            "model": str(tiny_bert),
            "method": "adalora",
            "tasks": [{"name": name, "path": str(path)} for name, path in two_tasks.items()],
            "train": {"max_epochs": 2, "patience": 2, "batch_size": 16, "max_seq_len": 32},
        }
    )
    calls: list[str | None] = []
    workers.run_trial({"lr": 1e-2, "lora_rank": 2}, spec=spec, report=lambda m, c: calls.append(c), workdir=tmp_path / "work")
    checkpoint = [c for c in calls if c][-1]
    out = workers.export_artifact(checkpoint, tmp_path / "artifact")
    manifest = json.loads((out / ARTIFACT_FILE).read_text())
    assert manifest["adapter"]["peft_type"] == "ADALORA" and manifest["prefix"] is None

    loaded = load_checkpoint(checkpoint)
    predictor = workers.load(out)
    rows = _rows(spec)
    for index, task in enumerate(load_spec_tasks(spec)):
        split = loaded.model.encode_split(predictor.tokenizer, index, task.dev, max_seq_len=32)
        raw = loaded.model.predict_split(index, split, batch_size=8, pad_id=predictor.tokenizer.pad_token_id, device="cpu")
        got = predictor.predict(task.name, rows[task.name])
        if task.kind == "classification":
            assert got == [task.labels[int(p)] for p in raw]
        else:
            assert got == pytest.approx(list(raw), abs=1e-4)

    # Stock PEFT loads the pruned AdaLoRA adapter (with notes about its rank pattern) and
    # computes the trained function.
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    inputs = tokenizer(["alpha magic beta", "cloud"], padding=True, return_tensors="pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_bert), str(out / ADAPTER_DIR))
    stock.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            stock(**inputs).last_hidden_state, loaded.model.encoder(**inputs).last_hidden_state, rtol=1e-4, atol=1e-5
        )
