"""Studies built through the real store, with reports shaped as the trainers write them.

Cheaper than training and exact: tests know every number. The metric keys follow
``workers.trial.run_trial`` (``<task>/score``, ``grad_conflict``, ``task_weight/<task>``)
and ``workers.peml`` (``nas/architecture``: per cell ``weights`` over the active
candidates, ``entropy``, ``pruned``, ``chosen``).
"""

from __future__ import annotations

import math
from typing import Any

from searchsvc.spec import parse_spec
from searchsvc.store import Store, Study

CANDIDATES = ("relu-d0.1", "tanh-d0.1", "gelu-d0.1-ln")
# lr per trial number; the objective rises with lr (so lr's importance is exactly 1)
LRS = (0.001, 0.004, 0.002, 0.008)


def peml_spec(tasks: list[dict[str, Any]], *, num_trials: int = 4, epochs: int = 3) -> dict[str, Any]:
    return {
        "name": "plots", "model": "some/model", "tasks": tasks, "method": "peml",
        "search": {"num_trials": num_trials, "metric": "avg_dev_score", "mode": "max", "space": {
            "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2},
            "lora_rank": {"type": "choice", "values": [4, 8]},
        }},
        "coordination": {"enabled": True},
        "train": {"max_epochs": epochs},
    }


def epoch_metrics(tasks: list[str], *, trial: int, epoch: int, epochs: int) -> dict[str, Any]:
    """One epoch's report of trial ``trial`` (0-based), with PEML and coordination diagnostics."""
    base = 0.5 + 40 * LRS[trial % len(LRS)]
    scores = {f"{t}/score": min(1.0, base + 0.02 * epoch + 0.01 * i) for i, t in enumerate(tasks)}
    shift = epoch / epochs
    cells = []
    for c in range(2):
        raw = [1.0 + shift * (c == 0), 1.0 + shift * (c == 1), 1.0 - 0.5 * shift]  # cell c drifts to candidate c
        total = sum(math.exp(v) for v in raw)
        weights = {name: math.exp(v) / total for name, v in zip(CANDIDATES, raw, strict=True)}
        if epoch == epochs and c == 1:
            weights.pop(CANDIDATES[2])  # pruned in the last epoch
        chosen = max(weights, key=weights.get)  # type: ignore[arg-type]
        cells.append({"weights": weights, "entropy": 1.0 - 0.1 * epoch, "pruned": [] if len(weights) == 3 else [CANDIDATES[2]],
                      "chosen": chosen})
    return {
        "epoch": epoch, "avg_dev_score": sum(scores.values()) / len(scores), "train_loss": 1.0 / epoch, **scores,
        "grad_conflict": 0.3 - 0.05 * epoch, "grad_conflict_after": 0.1 - 0.02 * epoch,
        **{f"task_weight/{t}": (0.5 + 0.1 * shift * (1 if i == 0 else -1)) for i, t in enumerate(tasks)},
        "nas/architecture": cells, "nas/chosen": [c["chosen"] for c in cells], "nas/entropy": 2.0 - 0.1 * epoch,
    }


def build_study(store: Store, owner: str, tasks: list[dict[str, Any]], *, trials: int = 4, epochs: int = 3,
                running: bool = False) -> Study:
    """A PEML study with ``trials`` trials of ``epochs`` reports each, finished (completed)
    unless ``running``: then the last trial is mid-way (one report) and one is not yet reported."""
    user = store.get_or_create_user(owner)
    spec = parse_spec(peml_spec(tasks, num_trials=max(trials, 1), epochs=epochs))
    study = store.create_study(user.id, spec)
    store.claim_study(study.id)
    names = [t["name"] for t in tasks]
    for n in range(trials):
        config = {"lr": LRS[n % len(LRS)], "lora_rank": (4, 8)[n % 2]}
        trial = store.start_trial(study.id, ray_trial_id=f"ray-{n}", config=config)
        reported = epochs
        if running and n == trials - 1:
            reported = 1
        if running and n == trials - 2:
            reported = 0
        for epoch in range(1, reported + 1):
            metrics = epoch_metrics(names, trial=n, epoch=epoch, epochs=epochs)
            store.add_report(trial.id, epoch=epoch, objective=metrics["avg_dev_score"], metrics=metrics)
        if not running:
            store.finish_trial(trial.id, "completed")
    if not running:
        store.finish_study(study.id, "completed")
    return store.get_study(study.id)
