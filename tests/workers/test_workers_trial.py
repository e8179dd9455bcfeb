"""run_trial end to end on a tiny BERT and synthetic tasks: reports, checkpoints, early stopping."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from searchsvc.spec import StudySpec, parse_spec
from tests.workers.helpers import STRICT_WARNINGS, count_rows, write_task
from workers import run_trial
from workers.checkpoint import INFO_FILE, WEIGHTS_FILE, load_checkpoint
from workers.trial import resolve_config

pytestmark = STRICT_WARNINGS

REQUIRED_KEYS = {
    "epoch",
    "avg_dev_score",
    "train_loss",
    "epoch_seconds",
    "trainable_params",
    "total_params",
    "keyword/score",
    "keyword/accuracy",
    "pairs/score",
    "pairs/f1",
    "pairs/accuracy",
}


def _spec(model: Path, tasks: dict[str, Path], *, method: str, **train: Any) -> StudySpec:
    return parse_spec(
        {
            "name": "test",
            "model": str(model),
            "method": method,
            "tasks": [{"name": name, "path": str(path)} for name, path in tasks.items()],
            "train": {"max_epochs": 3, "patience": 3, "batch_size": 16, "max_seq_len": 32, "seed": 0, **train},
        }
    )


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, float], str | None]] = []

    def __call__(self, metrics: dict[str, float], checkpoint: str | None) -> None:
        self.calls.append((dict(metrics), checkpoint))


@pytest.mark.parametrize("method", ["lora", "prefix", "lora+prefix", "adalora"])
def test_each_method_trains_reports_and_checkpoints(
    method: str, tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    spec = _spec(tiny_bert, synthetic_tasks, method=method)
    report = Recorder()
    best = run_trial({"lr": 1e-2}, spec=spec, report=report, workdir=tmp_path)

    assert len(report.calls) == 3
    assert [m["epoch"] for m, _ in report.calls] == [1, 2, 3]
    best_so_far = -math.inf
    for metrics, checkpoint in report.calls:
        assert REQUIRED_KEYS <= set(metrics)
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values())
        assert metrics["avg_dev_score"] == pytest.approx((metrics["keyword/score"] + metrics["pairs/score"]) / 2)
        assert metrics["pairs/score"] == metrics["pairs/f1"]  # the first metric is the primary one
        assert 0 < metrics["trainable_params"] < metrics["total_params"]
        # the objective is the study's metric (avg_dev_score, max) on the held-out selection rows
        assert metrics["objective"] == metrics["val/avg_dev_score"]
        assert metrics["val/avg_dev_score"] == pytest.approx((metrics["val/keyword/score"] + metrics["val/pairs/score"]) / 2)
        improved = metrics["objective"] > best_so_far
        assert metrics["is_best"] == float(improved)
        # every epoch is checkpointed (a trial resumes from its latest); is_best marks the best
        assert checkpoint is not None
        assert Path(checkpoint).parent == tmp_path
        assert Path(checkpoint).name == f"checkpoint-epoch-{int(metrics['epoch']):04d}"
        if improved:
            best_so_far = metrics["objective"]
            best_epoch = int(metrics["epoch"])
    # only the best and the latest stay in the work folder; no half-written directories
    expected = {f"checkpoint-epoch-{best_epoch:04d}", f"checkpoint-epoch-{len(report.calls):04d}"}
    assert {p.name for p in tmp_path.iterdir()} == expected
    for name in expected:
        assert (tmp_path / name / WEIGHTS_FILE).is_file() and (tmp_path / name / INFO_FILE).is_file()
    assert report.calls[-1][0]["train_loss"] < report.calls[0][0]["train_loss"]
    assert best["objective"] == best_so_far
    assert best == next(m for m, _ in report.calls if m["objective"] == best_so_far)


def test_checkpoint_rebuilds_the_model_with_the_same_scores(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    from workers.batching import encode_examples
    from workers.data import load_spec_tasks
    from workers.trainer import TaskRef, evaluate

    spec = _spec(tiny_bert, synthetic_tasks, method="lora+prefix", max_epochs=2)
    report = Recorder()
    best = run_trial({"lr": 1e-2, "prefix_length": 4, "lora_rank": 4}, spec=spec, report=report, workdir=tmp_path)
    last_checkpoint = next(c for m, c in reversed(report.calls) if m["is_best"])
    loaded = load_checkpoint(last_checkpoint)
    assert loaded.config["prefix_length"] == 4 and loaded.spec == spec
    assert loaded.info["epoch"] == best["epoch"]

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    tasks = load_spec_tasks(spec)
    splits = [encode_examples(tokenizer, t.dev, max_seq_len=32, with_token_types=True) for t in tasks]
    scores = evaluate(
        loaded.model,
        tasks=[TaskRef(t.name, t.metrics) for t in tasks],
        splits=splits,
        pad_id=tokenizer.pad_token_id,
        device=loaded.model.heads["keyword"].linear.weight.device,
        batch_size=7,
    )
    assert scores["keyword"]["accuracy"] == pytest.approx(best["keyword/accuracy"])
    assert scores["pairs"]["f1"] == pytest.approx(best["pairs/f1"])


def test_early_stopping_after_patience_epochs(tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path) -> None:
    # A vanishing learning rate cannot change any prediction, so epoch 2 does not improve.
    spec = _spec(tiny_bert, synthetic_tasks, method="lora", max_epochs=5, patience=1)
    report = Recorder()
    best = run_trial({"lr": 1e-12}, spec=spec, report=report, workdir=tmp_path)
    assert [m["epoch"] for m, _ in report.calls] == [1, 2]
    assert [m["is_best"] for m, _ in report.calls] == [1.0, 0.0]
    assert best["epoch"] == 1


def test_regression_task_with_temperature_sampling(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    counts = write_task(
        tmp_path / "data" / "counts",
        train=count_rows(48, seed=5),
        dev=count_rows(24, seed=6),
        meta={"metric": ["pearson", "spearman"], "labels": [0.0, 5.0], "label_type": "float"},
    )
    tasks = {"keyword": synthetic_tasks["keyword"], "counts": counts}
    spec = _spec(tiny_bert, tasks, method="lora", max_epochs=2, sampling="temperature", max_train_examples=40)
    report = Recorder()
    run_trial({"lr": 1e-2, "sampling_temperature": 3.0}, spec=spec, report=report, workdir=tmp_path / "work")
    metrics = report.calls[-1][0]
    assert {"counts/score", "counts/pearson", "counts/spearman", "counts/train_loss"} <= set(metrics)
    assert metrics["counts/score"] == metrics["counts/pearson"]
    assert -1.0 <= metrics["counts/pearson"] <= 1.0


def test_resolve_config_fills_defaults_and_checks_keys() -> None:
    resolved = resolve_config({"lora_rank": 16.0, "lr": 1e-3})
    assert resolved["lora_rank"] == 16 and isinstance(resolved["lora_rank"], int)
    assert resolved["lr"] == 1e-3
    assert resolved["prefix_length"] == 10  # a default
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        resolve_config({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="must be an integer"):
        resolve_config({"prefix_length": 2.5})
    with pytest.raises(ValueError, match="must be a number"):
        resolve_config({"lr": True})


def test_importing_workers_does_not_import_torch() -> None:
    code = "import sys, workers; assert callable(workers.run_trial); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("family", "method"), [("llama", "lora+prefix"), ("t5", "lora+prefix"), ("t5", "adalora")])
def test_other_model_families_train(
    family: str, method: str, tiny_model_factory: Callable[[str], Path], synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    spec = _spec(tiny_model_factory(family), synthetic_tasks, method=method, max_epochs=1)
    report = Recorder()
    run_trial({"lr": 1e-2}, spec=spec, report=report, workdir=tmp_path)
    assert len(report.calls) == 1 and REQUIRED_KEYS <= set(report.calls[0][0])


def test_trial_is_repeatable_given_the_seed(tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path) -> None:
    spec = _spec(tiny_bert, synthetic_tasks, method="lora+prefix", max_epochs=1)
    runs = []
    for name in ("a", "b"):
        report = Recorder()
        run_trial({"lr": 1e-2, "lora_dropout": 0.1}, spec=spec, report=report, workdir=tmp_path / name)
        wall_clock = ("epoch_seconds", "train_seconds", "seconds_per_step")
        runs.append({k: v for k, v in report.calls[0][0].items() if k not in wall_clock})
    assert runs[0] == runs[1]


def test_probe_epochs_fit_the_heads_before_the_first_step_and_the_first_report_says_so(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    """With ``train.probe_epochs`` the heads are fitted first (LP-FT): the first report carries
    each task's probe loss before and after, lower after; later reports do not repeat it.
    With a vanishing adapter lr, epoch 1's training loss then starts from fitted heads: it is
    below the loss of the same trial without probing."""
    losses = {}
    for probe in (0, 20):
        spec = _spec(tiny_bert, synthetic_tasks, method="lora", max_epochs=2, probe_epochs=probe, probe_lr=5e-2)
        report = Recorder()
        run_trial({"lr": 1e-12, "head_lr_scale": 1.0}, spec=spec, report=report, workdir=tmp_path / str(probe))
        first, second = report.calls[0][0], report.calls[1][0]
        probe_keys = {k for k in first if k.startswith("probe/")}
        assert not any(k.startswith("probe/") for k in second)
        if probe:
            assert probe_keys == {f"probe/{t}/loss_{w}" for t in synthetic_tasks for w in ("before", "after")}
            for task in synthetic_tasks:
                assert first[f"probe/{task}/loss_after"] < first[f"probe/{task}/loss_before"]
        else:
            assert probe_keys == set()
        losses[probe] = first["train_loss"]
    assert losses[20] < losses[0]


def test_peml_parameter_budget_is_the_one_shared_check() -> None:
    """One budget rule (workers.nas.budget), applied by the trial to PEML on real-size models:
    3,000,000 added on a 22,000,000 base is 13.64% > 10%; 2,200,000 is exactly the limit."""
    from workers.trial import _check_budget

    with pytest.raises(ValueError, match=r"3,000,000 parameters, 13\.64% .* 10% \(2,200,000\)\. Lower prefix_length"):
        _check_budget("peml", trainable=3_000_000, base=22_000_000)
    _check_budget("peml", trainable=2_200_000, base=22_000_000)
    _check_budget("lora", trainable=9_000_000, base=22_000_000)  # the budget is PEML's promise only
    _check_budget("peml", trainable=3_000_000, base=9_000_000)  # tiny test models are exempt
