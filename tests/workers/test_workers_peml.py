"""PEML end to end in the trainer: the searched prefix with LoRA, its schedules, the entropy
term, gradient coordination, the discretization gap, exact resume and export."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import workers
from searchsvc.spec import StudySpec, parse_spec
from workers import run_trial
from workers.checkpoint import load_checkpoint
from workers.data import load_spec_tasks

CANDIDATES = 8  # 4 activations x 2 (LayerNorm or not); dropout is searched only in bilevel (x 3)


def _spec(model: Path, tasks: dict[str, Path], *, peml: dict | None = None, coordination: dict | None = None,
          **train: Any) -> StudySpec:
    return parse_spec({
        "name": "peml-test",
        "model": str(model),
        "method": "peml",
        "tasks": [{"name": name, "path": str(path)} for name, path in tasks.items()],
        "train": {"max_epochs": 3, "patience": 10, "batch_size": 16, "max_seq_len": 32, "seed": 0, **train},
        "peml": {"cells": 2, **(peml or {})},
        "coordination": coordination or {},
    })


class Recorder:
    def __init__(self, *, crash_after: int | None = None) -> None:
        self.calls: list[tuple[dict[str, Any], str | None]] = []
        self.crash_after = crash_after

    def __call__(self, metrics: dict[str, Any], checkpoint: str | None) -> None:
        self.calls.append((json.loads(json.dumps(metrics)), checkpoint))  # as it reaches SQL: JSON
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise KeyboardInterrupt("the worker dies here")


CONFIG = {"lr": 1e-2, "prefix_length": 4, "lora_rank": 4, "nas_cells": 2, "arch_lr": 3e-2, "entropy_lambda": 1e-3}


@pytest.mark.parametrize("schedule", ["simultaneous", "bilevel", "lora_first", "prefix_first"])
def test_every_schedule_trains_and_reports_the_architecture(
    schedule: str, tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    spec = _spec(tiny_bert, synthetic_tasks, peml={"schedule": schedule}, max_epochs=4)
    report = Recorder()
    run_trial(dict(CONFIG), spec=spec, report=report, workdir=tmp_path)
    assert len(report.calls) == 4
    for metrics, _ in report.calls:
        cells = metrics["nas/architecture"]
        assert len(cells) == 2
        for cell in cells:
            assert math.isclose(sum(cell["weights"].values()), 1.0, rel_tol=1e-5)
            assert cell["chosen"] == max(cell["weights"], key=cell["weights"].get)
            assert 0.0 <= cell["entropy"] <= math.log(CANDIDATES * (3 if schedule == "bilevel" else 1)) + 1e-6
        assert metrics["discretization_gap"] == pytest.approx(metrics["relaxed_avg_dev_score"] - metrics["avg_dev_score"])
        assert metrics["avg_dev_score"] == metrics["discrete_avg_dev_score"]  # the objective is the exported (discrete) model's
    phases = [m["nas/phase"] for m, _ in report.calls]
    expected = {"simultaneous": ["all"] * 4, "bilevel": ["all"] * 4,
                "lora_first": ["lora", "lora", "prefix", "prefix"], "prefix_first": ["prefix", "prefix", "lora", "lora"]}
    assert phases == expected[schedule]
    weights = [[c["weights"] for c in m["nas/architecture"]] for m, _ in report.calls]
    if schedule == "lora_first":  # α is frozen while LoRA trains alone, and moves once the prefix trains
        assert weights[0] == weights[1] and weights[2] != weights[1]
    else:
        assert weights[-1] != weights[0]


def test_a_large_entropy_weight_lowers_every_cells_entropy(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    spec = _spec(tiny_bert, synthetic_tasks, peml={"prune_threshold": 0.0})
    report = Recorder()
    run_trial({**CONFIG, "entropy_lambda": 5.0, "arch_lr": 0.05}, spec=spec, report=report, workdir=tmp_path)
    first, last = report.calls[0][0], report.calls[-1][0]
    for cell in range(2):
        start = math.log(CANDIDATES)  # α starts (almost) uniform: entropy ln 8 = 2.079
        assert first[f"nas/cell{cell}/entropy"] < start
        assert last[f"nas/cell{cell}/entropy"] < first[f"nas/cell{cell}/entropy"]


def test_pruning_removes_weak_candidates_and_they_stay_out(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    # 8 steps per epoch (2 tasks x 64 rows, batches of 16): a check every 4 steps, twice an epoch.
    spec = _spec(tiny_bert, synthetic_tasks, peml={"prune_threshold": 0.9, "prune_patience": 1, "prune_every": 4})
    report = Recorder()
    run_trial({**CONFIG, "entropy_lambda": 1.0, "arch_lr": 0.05}, spec=spec, report=report, workdir=tmp_path)
    actives = [[m[f"nas/cell{c}/active"] for c in range(2)] for m, _ in report.calls]
    assert actives[0] == [CANDIDATES, CANDIDATES] or any(m["nas/pruned_now"] != [[], []] for m, _ in report.calls[:1])
    assert all(a < CANDIDATES for a in actives[-1])
    for earlier, later in zip(actives, actives[1:], strict=False):
        assert all(b <= a for a, b in zip(earlier, later, strict=True))


def test_coordination_reports_lower_conflict_after_projection(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    spec = _spec(tiny_bert, synthetic_tasks, coordination={"enabled": True, "every_k": 1})
    report = Recorder()
    run_trial({**CONFIG, "grad_alpha": 2.0}, spec=spec, report=report, workdir=tmp_path)
    for metrics, _ in report.calls:
        assert -1.0 <= metrics["grad_conflict"] <= 1.0
        assert metrics["grad_conflict_after"] <= metrics["grad_conflict"] + 1e-9
        weights = [metrics["task_weight/keyword"], metrics["task_weight/pairs"]]
        assert sum(weights) == pytest.approx(1.0)


def test_without_coordination_the_conflict_is_still_measured(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    spec = _spec(tiny_bert, synthetic_tasks)
    report = Recorder()
    run_trial(dict(CONFIG), spec=spec, report=report, workdir=tmp_path)
    assert all("grad_conflict" in m and "grad_conflict_after" not in m for m, _ in report.calls)


@pytest.mark.parametrize("coordination", [None, {"enabled": True, "every_k": 2}], ids=["plain", "coordinated"])
def test_an_interrupted_trial_resumes_exactly_where_it_was(
    coordination: dict | None, tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    """Coordinated: the dynamic task weights' history and the every_k step phase are part
    of the checkpoint (a large grad_alpha makes λ far from uniform, so losing them shows)."""
    spec = _spec(tiny_bert, synthetic_tasks, max_epochs=4, coordination=coordination)
    config = {**CONFIG, "grad_alpha": 20.0}
    whole = Recorder()
    run_trial(dict(config), spec=spec, report=whole, workdir=tmp_path / "whole")

    broken = Recorder(crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_trial(dict(config), spec=spec, report=broken, workdir=tmp_path / "broken")
    resumed = Recorder()
    run_trial(dict(config), spec=spec, report=resumed, workdir=tmp_path / "resumed", resume_from=broken.calls[-1][1])

    assert [m["epoch"] for m, _ in resumed.calls] == [3, 4]
    assert resumed.calls[0][0]["resumed_from_epoch"] == 2
    for (want, _), (got, _) in zip(whole.calls[2:], resumed.calls, strict=True):
        assert got["avg_dev_score"] == pytest.approx(want["avg_dev_score"])
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        assert got["nas/chosen"] == want["nas/chosen"]
        weights = sorted(k for k in want if k.startswith("task_weight/"))
        assert bool(weights) == bool(coordination)
        assert [got[k] for k in weights] == pytest.approx([want[k] for k in weights], rel=1e-5)
        for got_cell, want_cell in zip(got["nas/architecture"], want["nas/architecture"], strict=True):
            assert got_cell["weights"] == pytest.approx(want_cell["weights"], rel=1e-4)


def test_peml_export_loads_and_predicts_like_the_discrete_model(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    spec = _spec(tiny_bert, synthetic_tasks, max_epochs=2)
    report = Recorder()
    run_trial(dict(CONFIG), spec=spec, report=report, workdir=tmp_path / "work")
    best = next(c for m, c in reversed(report.calls) if m["is_best"])
    loaded = load_checkpoint(best)
    assert loaded.model.prefix is not None
    out = workers.export_artifact(best, tmp_path / "artifact")
    manifest = json.loads((out / "searchsvc_artifact.json").read_text())
    assert manifest["method"] == "peml" and manifest["prefix"]["name"] == "searched"

    from transformers import AutoTokenizer

    from workers.batching import prepare_tokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(spec.model))
    tasks = load_spec_tasks(spec)
    predictor = workers.load(out)
    folders = {t.name: Path(t.path) for t in spec.tasks}
    with loaded.model.prefix.discretized():  # type: ignore[union-attr]
        for index, task in enumerate(tasks):
            split = loaded.model.encode_split(tokenizer, index, task.dev, max_seq_len=32)
            raw = loaded.model.predict_split(index, split, batch_size=8, pad_id=tokenizer.pad_token_id, device="cpu")
            expected = [task.labels[int(p)] for p in raw]
            rows = [json.loads(line) for line in (folders[task.name] / "dev.jsonl").read_text().splitlines()]
            assert predictor.predict(task.name, rows) == expected


def test_discretize_then_retrain_exports_the_retrained_discrete_model(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    """max_epochs 3, retrain_epochs 1: epochs 1-2 search, epoch 3 trains the argmax
    architecture chosen at the end of epoch 2 (α frozen, relaxed = discrete, gap 0), its
    prefix weights keep training, and its checkpoint exports a model that predicts exactly
    as the retrained one."""
    from safetensors.torch import load_file

    spec = _spec(tiny_bert, synthetic_tasks, peml={"retrain_epochs": 1}, max_epochs=3)
    report = Recorder()
    run_trial(dict(CONFIG), spec=spec, report=report, workdir=tmp_path / "work")
    searched, retrained = report.calls[1][0], report.calls[2][0]
    assert [m["nas/searching"] for m, _ in report.calls] == [1.0, 1.0, 0.0]
    assert [m["is_best"] for m, _ in report.calls] == [0.0, 0.0, 1.0]  # the objective is the retrained model's
    assert retrained["search_discretization_gap"] == pytest.approx(searched["discretization_gap"])
    assert retrained["nas/chosen"] == searched["nas/chosen"]
    assert all(len(cell["weights"]) == 1 for cell in retrained["nas/architecture"])
    assert retrained["discretization_gap"] == 0.0 and retrained["nas/converged"] == 1.0
    last = report.calls[2][1]
    assert last is not None
    loaded = load_checkpoint(last)
    prefix = loaded.model.prefix
    assert prefix is not None and prefix.is_discrete  # type: ignore[union-attr]
    out = workers.export_artifact(last, tmp_path / "artifact")
    exported = load_file(str(out / "prefix.safetensors"))
    state = prefix.state_dict()
    assert set(exported) == set(state) and all(torch.equal(exported[k], state[k]) for k in state)

    from transformers import AutoTokenizer

    from workers.batching import prepare_tokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(spec.model))
    predictor = workers.load(out)
    folders = {t.name: Path(t.path) for t in spec.tasks}
    for index, task in enumerate(load_spec_tasks(spec)):
        split = loaded.model.encode_split(tokenizer, index, task.dev, max_seq_len=32)
        raw = loaded.model.predict_split(index, split, batch_size=8, pad_id=tokenizer.pad_token_id, device="cpu")
        rows = [json.loads(line) for line in (folders[task.name] / "dev.jsonl").read_text().splitlines()]
        assert predictor.predict(task.name, rows) == [task.labels[int(p)] for p in raw]


def test_the_parameter_budget_refuses_an_oversized_generator(synthetic_tasks: dict[str, Path], tmp_path: Path) -> None:
    from searchsvc.demo import minilm_path

    model = minilm_path(tmp_path / "models")
    spec = _spec(model, synthetic_tasks, peml={"width": 4096})
    with pytest.raises(ValueError, match=r"peml adds .* of the base model"):
        run_trial(dict(CONFIG), spec=spec, report=Recorder(), workdir=tmp_path / "work")


def test_task_similarity_regularization_trains_with_instructions(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    spec = parse_spec({
        "name": "similar", "model": str(tiny_bert), "method": "lora+prefix",
        "tasks": [{"name": "keyword", "path": str(synthetic_tasks["keyword"]), "instruction": "is the keyword there"},
                  {"name": "pairs", "path": str(synthetic_tasks["pairs"]), "instruction": "are the two the same"}],
        "train": {"max_epochs": 1, "batch_size": 16, "max_seq_len": 32},
        "coordination": {"similarity_weight": 1.0},
    })
    report = Recorder()
    run_trial({"lr": 1e-2}, spec=spec, report=report, workdir=tmp_path)
    assert math.isfinite(report.calls[0][0]["train_loss"])


def test_task_similarity_needs_an_instruction(tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path) -> None:
    spec = _spec(tiny_bert, synthetic_tasks, coordination={"similarity_weight": 1.0})
    with pytest.raises(ValueError, match="no task has an instruction"):
        run_trial(dict(CONFIG), spec=spec, report=Recorder(), workdir=tmp_path)
