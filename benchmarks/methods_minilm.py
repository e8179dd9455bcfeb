"""PEML against its baselines on real GLUE data with the pretrained MiniLM, one process.

Trains ``lora``, ``lora+prefix``, ``peml`` and ``peml`` with gradient coordination with
the SAME hyperparameters and data, one after the other in this process (no Ray, no API:
the trainer alone), and writes per-task dev scores, PEML's discretization gap, the
gradient conflict score with and without coordination, and the training time per step
of each method relative to ``lora`` (all measured in this run).

    python benchmarks/methods_minilm.py [--epochs 3] [--train 300] [--dev 300] [--tasks sst2,rte,mrpc]

Results: benchmarks/results/methods_minilm.{json,md}. Data: ../shared/data (never copied).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

import torch
from _trainer_common import (
    DATA,
    RESULTS,
    minilm,
    refuse_unknown_keys,
    study_spec,
    task_specs,
    train_once,
    write_json,
)
from tqdm import tqdm

RUNS = [  # label, method, coordination
    ("lora", "lora", None),
    ("lora+prefix", "lora+prefix", None),
    ("peml", "peml", None),
    ("peml+coordination", "peml", {"enabled": True, "every_k": 1}),
]
CONFIG = {"lr": 5e-3, "lora_rank": 8, "prefix_length": 10, "nas_cells": 6, "entropy_lambda": 1e-3, "arch_lr": 3e-3,
          "grad_alpha": 1.0, "warmup_ratio": 0.06}


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = minilm()
    tasks = task_specs(args.tasks.split(","), args.data)
    results: dict[str, Any] = {
        "setup": {"model": "all-MiniLM-L6-v2", "tasks": [t["name"] for t in tasks], "train_per_task": args.train,
                  "dev_per_task": args.dev, "epochs": args.epochs, "config": CONFIG, "seed": 0,
                  "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "torch": torch.__version__},
        "runs": {},
    }
    for label, method, coordination in tqdm(RUNS, desc="methods", unit="run"):
        spec = study_spec(name=f"bench-{label}", model=model, tasks=tasks, method=method, coordination=coordination,
                          train={"max_epochs": args.epochs, "patience": args.epochs, "batch_size": 16, "max_seq_len": 128,
                                 "seed": 0, "max_train_examples": args.train, "max_dev_examples": args.dev})
        epochs: list[dict[str, Any]] = []
        started = time.perf_counter()
        best = train_once(spec, CONFIG, report=lambda m, _c: epochs.append(m))
        results["runs"][label] = {"best": best, "epochs": epochs, "wall_seconds": time.perf_counter() - started}
        tqdm.write(f"{label}: avg_dev_score {best['avg_dev_score']:.4f} (epoch {best['epoch']}), "
                   f"{best['seconds_per_step']:.3f} s/step")
    return results


def summarize(results: dict[str, Any]) -> str:
    refuse_unknown_keys(results, ("setup", "runs"), script="methods_minilm.py")
    tasks = results["setup"]["tasks"]
    runs = results["runs"]
    lora_step = sum(e["seconds_per_step"] for e in runs["lora"]["epochs"]) / len(runs["lora"]["epochs"])
    lines = [
        f"# Methods on {', '.join(tasks)} with all-MiniLM-L6-v2",
        "",
        f"{results['setup']['train_per_task']} training and up to {results['setup']['dev_per_task']} dev examples per task, "
        f"{results['setup']['epochs']} epochs, one shared configuration `{json.dumps(results['setup']['config'])}`; "
        "best epoch by avg_dev_score. PEML's scores are the discrete model's (what it exports).",
        "",
        "| method | " + " | ".join(tasks) + " | average | disc. gap | grad conflict | conflict after | s/step vs lora |",
        "|---" * (len(tasks) + 6) + "|",
    ]
    for label, run in runs.items():
        best = run["best"]
        step = sum(e["seconds_per_step"] for e in run["epochs"]) / len(run["epochs"])
        conflict = [e["grad_conflict"] for e in run["epochs"] if "grad_conflict" in e]
        after = [e["grad_conflict_after"] for e in run["epochs"] if "grad_conflict_after" in e]
        cells = [f"{best[f'{t}/score']:.4f}" for t in tasks]
        gap = f"{best['discretization_gap']:+.4f}" if "discretization_gap" in best else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {best['avg_dev_score']:.4f} | {gap} | "
                     f"{sum(conflict) / len(conflict):.4f} | " + (f"{sum(after) / len(after):.4f}" if after else "-")
                     + f" | {step / lora_step:.2f}x |")
    lines += ["", f"lora: {lora_step:.3f} s per training step on this machine (absolute times are noise here; compare ratios)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--tasks", default="sst2,rte,mrpc")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--dev", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    results = run(args)
    out = write_json(args.out, "methods_minilm", results)  # before the table: a failing summary loses no run
    table = summarize(results)
    (out / "methods_minilm.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
