"""Selection that does not peek, and a trial that follows the study's metric and mode.

- ``carve_selection``: seeded, disjoint, the same rows every time;
- ``search.metric`` / ``search.mode``: patience, the best epoch and the returned best follow
  ``train_loss`` (min) or a ``<task>/<metric>`` (max), measured on the held-out rows;
- ``method: head``: only the heads train, and the trial's method may come from its config
  (method as a search dimension).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from searchsvc.spec import parse_spec
from tests.workers.helpers import STRICT_WARNINGS
from workers import run_trial
from workers.data import load_spec_tasks
from workers.trial import carve_selection, trial_method

pytestmark = STRICT_WARNINGS


def _spec(model: Path, tasks: dict[str, Path], *, method: str = "lora", search: dict[str, Any] | None = None, **train: Any):
    return parse_spec({
        "name": "selection",
        "model": str(model),
        "method": method,
        "tasks": [{"name": name, "path": str(path)} for name, path in tasks.items()],
        "search": search or {},
        "train": {"max_epochs": 3, "patience": 3, "batch_size": 16, "max_seq_len": 32, "seed": 0, **train},
    })


def _run(spec: Any, config: dict[str, Any], workdir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    best = run_trial(config, spec=spec, report=lambda m, _c: calls.append(dict(m)), workdir=workdir)
    return calls, best


def test_carve_selection_is_seeded_disjoint_and_covers_every_row() -> None:
    train, held = carve_selection(50, fraction=0.2, key="0/sst2")
    assert len(held) == 10 and len(train) == 40
    assert sorted(train + held) == list(range(50)) and not set(train) & set(held)
    assert (train, held) == carve_selection(50, fraction=0.2, key="0/sst2")  # same key, same rows
    assert held != carve_selection(50, fraction=0.2, key="0/wic")[1]  # another task, other rows
    assert held != carve_selection(50, fraction=0.2, key="1/sst2")[1]  # another subset seed, other rows
    assert held != list(range(40, 50))  # not the file's tail: files are often sorted
    assert carve_selection(2, fraction=0.5, key="k") in (([0], [1]), ([1], [0]))
    with pytest.raises(ValueError, match="at least 2"):
        carve_selection(1, fraction=0.2, key="k")


def test_selection_rows_never_appear_in_training_or_in_the_reported_split(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    from workers.trial import build_trial

    spec = _spec(tiny_bert, synthetic_tasks)
    trial = build_trial({"lr": 1e-2}, spec=spec)
    for task, train, held, dev in zip(load_spec_tasks(spec), trial.train_splits, trial.select_splits, trial.dev_splits,
                                      strict=True):
        assert len(train) + len(held) == len(task.train) and len(held) == round(0.2 * len(task.train))
        assert held is not dev and len(dev) == len(task.dev)
        # by index: the held-out rows are carve_selection's, and training gets exactly the others
        kept, picked = carve_selection(len(task.train), fraction=0.2, key=f"0/{task.name}")
        assert held.labels == [task.train[i].label for i in picked]
        assert train.labels == [task.train[i].label for i in kept]


def test_selection_on_dev_uses_the_dev_split_and_reports_no_val_keys(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    calls, _ = _run(_spec(tiny_bert, synthetic_tasks, selection="dev", max_epochs=1), {"lr": 1e-2}, tmp_path)
    assert calls[0]["objective"] == calls[0]["avg_dev_score"]
    assert not [k for k in calls[0] if k.startswith("val/")]


def test_train_loss_min_picks_the_lowest_loss_epoch(tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path) -> None:
    spec = _spec(tiny_bert, synthetic_tasks, search={"metric": "train_loss", "mode": "min"}, max_epochs=3)
    calls, best = _run(spec, {"lr": 1e-2}, tmp_path)
    losses = [m["train_loss"] for m in calls]
    assert [m["objective"] for m in calls] == losses
    lowest = min(range(len(losses)), key=losses.__getitem__)
    assert best["epoch"] == calls[lowest]["epoch"]
    running = math.inf
    for metrics in calls:  # is_best marks each new minimum, not a new maximum
        assert metrics["is_best"] == float(metrics["train_loss"] < running)
        running = min(running, metrics["train_loss"])


def test_patience_follows_a_task_metric_on_held_out_rows(tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path) -> None:
    spec = _spec(tiny_bert, synthetic_tasks, search={"metric": "keyword/accuracy", "mode": "max"}, max_epochs=6, patience=1)
    calls, best = _run(spec, {"lr": 1e-12}, tmp_path)
    # nothing changes with a vanishing lr, so the held-out keyword accuracy never improves after epoch 1
    assert [m["epoch"] for m in calls] == [1, 2]
    assert [m["objective"] for m in calls] == [m["val/keyword/accuracy"] for m in calls]
    assert best["epoch"] == 1


def test_task_metric_max_selects_by_that_task_on_held_out_rows(
    tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    spec = _spec(tiny_bert, synthetic_tasks, search={"metric": "pairs/f1", "mode": "max"}, max_epochs=3)
    calls, best = _run(spec, {"lr": 1e-2}, tmp_path)
    values = [m["val/pairs/f1"] for m in calls]
    assert [m["objective"] for m in calls] == values
    assert best["objective"] == max(values)
    assert best["epoch"] == calls[values.index(max(values))]["epoch"]


def test_head_method_trains_only_the_heads(tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path) -> None:
    from workers.trial import build_trial

    spec = _spec(tiny_bert, synthetic_tasks, method="head", max_epochs=1)
    trial = build_trial({"lr": 1e-2}, spec=spec)
    trainable = [name for name, p in trial.model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("heads.") for name in trainable)
    before = {name: p.detach().clone() for name, p in trial.model.named_parameters() if not p.requires_grad}
    calls, _ = _run(spec, {"lr": 1e-2}, tmp_path)
    assert calls[0]["trainable_params"] == sum(p.numel() for n, p in trial.model.named_parameters() if n in trainable)
    assert all(torch.equal(t, dict(trial.model.named_parameters())[n]) for n, t in before.items())


def test_the_config_may_choose_the_method(tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path) -> None:
    spec = _spec(tiny_bert, synthetic_tasks, method="lora", max_epochs=1)
    assert trial_method({"method": "lora+prefix"}, spec) == "lora+prefix"
    assert trial_method({}, spec) == "lora"
    with pytest.raises(ValueError, match="unknown method"):
        trial_method({"method": "nope"}, spec)
    from workers.checkpoint import load_checkpoint

    calls: list[tuple[dict[str, Any], str | None]] = []
    run_trial({"method": "prefix", "lr": 1e-2, "prefix_length": 3}, spec=spec, report=lambda m, c: calls.append((m, c)),
              workdir=tmp_path)
    loaded = load_checkpoint(calls[0][1])
    assert loaded.model.prefix is not None and loaded.model.peft_module() is None  # prefix alone: no LoRA
    assert loaded.info["method"] == "prefix"


@pytest.mark.parametrize("method", ["lora", "peml"])
def test_dev_scored_once_for_the_best_epoch_equals_scoring_it_every_epoch(
    method: str, tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path: Path
) -> None:
    config = {"lr": 1e-2, "prefix_length": 3, "lora_rank": 4}
    every, best_every = _run(_spec(tiny_bert, synthetic_tasks, method=method), config, tmp_path / "every")
    once, best_once = _run(_spec(tiny_bert, synthetic_tasks, method=method, dev_scores="best_epoch"), config, tmp_path / "once")
    assert [m["objective"] for m in once] == [m["objective"] for m in every]  # the same training, the same selection
    assert not [k for m in once for k in m if k == "avg_dev_score" or k.endswith("/accuracy") and not k.startswith("val/")]
    assert best_once["epoch"] == best_every["epoch"]
    for key in ("avg_dev_score", "keyword/accuracy", "pairs/f1"):
        assert best_once[key] == pytest.approx(best_every[key]), key
    if method == "peml":
        assert best_once["discretization_gap"] == pytest.approx(best_every["discretization_gap"])
        assert "val/discretization_gap" in once[0]


def test_head_encodes_each_text_once_in_eval_mode(tiny_bert: Path, synthetic_tasks: dict[str, Path]) -> None:
    from workers.trial import build_trial, train_and_score_epoch

    trial = build_trial({"lr": 1e-2}, spec=_spec(tiny_bert, synthetic_tasks, method="head", max_epochs=2))
    model = trial.model
    rows: list[int] = []
    model.encoder.register_forward_hook(lambda _m, args, kwargs, _out: rows.append(int(kwargs["input_ids"].shape[0])),
                                        with_kwargs=True)
    train_and_score_epoch(trial, epoch=1, global_step=0)
    first = sum(rows)
    distinct = {tuple(ids) for split in (*trial.train_splits, *trial.select_splits, *trial.dev_splits)
                for ids in split.input_ids}
    assert 0 < first == len(model._features) <= len(distinct)  # one encoder row per distinct text
    rows.clear()
    train_and_score_epoch(trial, epoch=2, global_step=trial.sampler.steps_per_epoch)
    assert sum(rows) == 0  # nothing new to encode in the second epoch
    # the cached features are the frozen encoder's eval-mode mean pooling
    split = trial.dev_splits[0]
    batch = model.collate([(0, split, [0, 1, 2])], pad_id=trial.pad_id)
    model.train()
    with torch.no_grad():
        cached = model.encode(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        model.eval()
        fresh = model._encode_now(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    assert torch.allclose(cached, fresh, atol=1e-5)
