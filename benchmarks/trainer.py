"""Trainer cost: step time and peak memory of ``peml``, ``lora+prefix`` and ``lora`` on MiniLM.

Step time: the three methods are built in this process around the pretrained
all-MiniLM-L6-v2 exactly as a trial builds them (:class:`FixedBatchTrainer`: LoRA, prefix,
PEML's searched prefix and α optimizer, AdamW, schedule, the trainer's backward with its
sampled gradient-conflict measurement), and all train on ONE fixed batch: 8 rows of sst2 and
the 8 longest of rte's first 400, 16 x 128 tokens. A step is forward + backward + clipping +
optimizer (+ α) step. After warm-up steps, the methods take turns (round-robin
repetitions, the starting method rotating) so that machine drift hits all of them alike;
each repetition gives each method's mean step time over ``--steps`` steps and its ratio to
``lora`` in the same repetition; the reported ratio is the median over repetitions.

Peak memory (CPU): each method, and ``lora`` at each rank of ``--ranks``, runs in a FRESH
subprocess that builds the same model and batch and takes ``--mem-steps`` steps. It reports
the peak resident set size (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` just
before training; ``ru_maxrss`` where that is refused) less the resident size before
training ("training increase": gradients, optimizer state, activations), and the peak
over the whole child less its size after the imports ("total increase": the model
too). Median over ``--mem-repeats`` children.

    python benchmarks/trainer.py            # full: ~10 min on 2 cores
    python benchmarks/trainer.py --smoke    # < 90 s

Results: benchmarks/results/trainer.{json,md,png}. Data: ../shared/data (never copied).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _trainer_common import (
    DATA,
    RESULTS,
    FixedBatchTrainer,
    apply_defaults,
    minilm,
    publish,
    pyplot,
    save_figure,
    setup_info,
    setup_markdown,
    study_spec,
    task_specs,
)

NAME = "trainer"
METHODS = ("peml", "lora+prefix", "lora")
REFERENCE = "lora"
TASKS = ("sst2", "rte")
ROWS_PER_TASK = 8
MAX_SEQ_LEN = 128
POOL_ROWS = 400  # rows read per task to find the long rte rows
# The shared configuration of benchmarks/methods_minilm.py.
CONFIG = {"lr": 5e-3, "lora_rank": 8, "prefix_length": 10, "nas_cells": 6, "entropy_lambda": 1e-3, "arch_lr": 3e-3,
          "grad_alpha": 1.0, "warmup_ratio": 0.06}
# Every allocation above 128 KiB straight from mmap and back to the OS when freed (glibc's threshold
# otherwise adapts upwards and keeps freed blocks resident), so RSS follows the live tensors.
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
FULL = {"warmup": 10, "steps": 10, "reps": 8, "ranks": "8,16,32,64,96", "mem_steps": 6, "mem_repeats": 2}
SMOKE = {"warmup": 1, "steps": 2, "reps": 2, "ranks": "8,32", "mem_steps": 2, "mem_repeats": 1}


def make_trainer(method: str, rank: int, data: str) -> FixedBatchTrainer:
    spec = study_spec(name=f"bench-{method}", model=minilm(), tasks=task_specs(TASKS, data), method=method,
                      train={"batch_size": 2 * ROWS_PER_TASK, "max_seq_len": MAX_SEQ_LEN, "seed": 0,
                             "max_train_examples": POOL_ROWS, "max_dev_examples": 8,
                             "subset": "first"})
    return FixedBatchTrainer(spec, {**CONFIG, "lora_rank": rank}, rows_per_task=ROWS_PER_TASK)


# ---- step time (this process) ------------------------------------------------------------------


def time_steps(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    trainers = {m: make_trainer(m, CONFIG["lora_rank"], args.data) for m in tqdm(METHODS, desc="build", unit="model")}
    shapes = {m: list(t.batch.input_ids.shape) for m, t in trainers.items()}
    for trainer in tqdm(trainers.values(), desc="warm-up", unit="model"):
        for _ in range(args.warmup):
            trainer.step()
    reps: list[dict[str, float]] = []
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    bar = tqdm(total=args.reps * len(METHODS) * args.steps, desc="timed steps", unit="step")
    for rep in range(args.reps):
        order = METHODS[rep % len(METHODS):] + METHODS[: rep % len(METHODS)]
        means = {}
        for method in order:
            taken = [trainers[method].step() for _ in range(args.steps)]
            times[method] += taken
            means[method] = statistics.fmean(taken)
            bar.update(args.steps)
        reps.append(means)
    bar.close()
    methods: dict[str, Any] = {}
    for method in METHODS:
        ratios = [r[method] / r[REFERENCE] for r in reps]
        t = trainers[method]
        methods[method] = {
            "median_step_s": statistics.median(times[method]), "mean_step_s": statistics.fmean(times[method]),
            "min_step_s": min(times[method]), "max_step_s": max(times[method]),
            "ratio_to_lora": statistics.median(ratios), "rep_ratios": ratios, "rep_mean_step_s": [r[method] for r in reps],
            "trainable_params": t.trainable_params, "total_params": t.total_params, "batch_shape": shapes[method],
        }
    real = trainers[REFERENCE].real_token_share
    return {"methods": methods, "real_token_share": real}


# ---- peak memory (fresh subprocesses) ------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_child(method: str, rank: int, steps: int, data: str) -> dict[str, Any]:
    """Runs in a fresh interpreter: build one model and batch, take ``steps`` steps, measure RSS."""
    after_imports = _status_kib("VmRSS")
    trainer = make_trainer(method, rank, data)
    gc.collect()
    before_training = _status_kib("VmRSS")
    peak_build = _status_kib("VmHWM")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        how = "VmHWM reset via /proc/self/clear_refs"
    except OSError:
        how = "ru_maxrss (not reset: a lower bound of the training increase)"
    for _ in range(steps):
        trainer.step()
    peak_train = _status_kib("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if peak_train is None or after_imports is None or before_training is None or peak_build is None:
        raise RuntimeError("no /proc/self/status: this benchmark's memory part needs Linux")
    if how.startswith("ru_maxrss"):
        peak_train = maxrss
    return {
        "method": method, "rank": rank, "steps": steps, "how": how,
        "rss_after_imports_mib": after_imports / 1024, "rss_before_training_mib": before_training / 1024,
        "peak_build_mib": peak_build / 1024, "peak_training_mib": peak_train / 1024,
        "training_increase_mib": (peak_train - before_training) / 1024,
        "total_increase_mib": (max(peak_build, peak_train) - after_imports) / 1024,
        "trainable_params": trainer.trainable_params,
        # parameters + gradients + AdamW's two moments, fp32: what the adapter itself costs
        "adapter_state_mib": 16 * trainer.trainable_params / 2**20,
    }


def measure_memory(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    ranks = [int(r) for r in args.ranks.split(",")]
    jobs = [(m, CONFIG["lora_rank"]) for m in METHODS if m != REFERENCE]
    jobs += [(REFERENCE, r) for r in sorted(set(ranks) | {CONFIG["lora_rank"]})]  # lora at rank 8 is the method's own run
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {job: [] for job in jobs}
    for _ in tqdm(range(args.mem_repeats), desc="memory repeats", unit="round", position=0):
        for method, rank in tqdm(jobs, desc="memory children", unit="child", leave=False, position=1):
            command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", method, "--rank", str(rank),
                       "--mem-steps", str(args.mem_steps), "--data", args.data]
            if args.threads:
                command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=False, env=CHILD_ENV)
            if done.returncode != 0:
                raise RuntimeError(f"memory child {method} r={rank} failed:\n{done.stderr[-3000:]}")
            runs[(method, rank)].append(json.loads(done.stdout.strip().splitlines()[-1]))

    def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {"training_increase_mib": statistics.median(s["training_increase_mib"] for s in samples),
                "total_increase_mib": statistics.median(s["total_increase_mib"] for s in samples),
                "peak_training_mib": statistics.median(s["peak_training_mib"] for s in samples),
                "trainable_params": samples[0]["trainable_params"], "adapter_state_mib": samples[0]["adapter_state_mib"],
                "how": samples[0]["how"], "samples": samples}

    lora = summary(runs[(REFERENCE, CONFIG["lora_rank"])])
    methods = {}
    for method in METHODS:
        entry = summary(runs[(method, CONFIG["lora_rank"])])
        entry["training_increase_ratio_to_lora"] = entry["training_increase_mib"] / lora["training_increase_mib"]
        entry["total_increase_ratio_to_lora"] = entry["total_increase_mib"] / lora["total_increase_mib"]
        methods[method] = entry
    by_rank = {str(r): summary(runs[(REFERENCE, r)]) for r in ranks}
    return {"methods": methods, "lora_by_rank": by_rank, "how": lora["how"]}


# ---- report ------------------------------------------------------------------------------------------


def summarize(results: dict[str, Any]) -> str:
    s = results["settings"]
    steps, memory = results["step_time"], results["memory"]
    lines = [
        "# Trainer: step time and peak memory, all-MiniLM-L6-v2 (CPU)",
        "",
        *setup_markdown(results["setup"]),
        f"- batch: {s['rows_per_task']} sst2 + {s['rows_per_task']} rte rows (the longest of rte's first {POOL_ROWS}), "
        f"padded to {s['max_seq_len']} tokens: shape {steps['methods'][REFERENCE]['batch_shape']}, "
        f"{steps['real_token_share']:.0%} real tokens",
        f"- step = forward + backward + clip + AdamW (+ PEML's α Adam) step; config `{json.dumps(CONFIG)}`",
        f"- step time: {s['warmup']} warm-up steps per method excluded, then {s['reps']} round-robin repetitions of "
        f"{s['steps']} steps per method; ratio = median over repetitions of (method mean / lora mean in that repetition)",
        f"- memory: {memory['how']}; fresh subprocess per method and rank (MALLOC_MMAP_THRESHOLD_=131072), "
        f"{s['mem_steps']} steps, median of {s['mem_repeats']} children",
        "",
        "| method | trainable params | median s/step | step time vs lora (median; min-max over reps) | "
        "training RSS increase MiB | vs lora | total RSS increase MiB | vs lora |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        t, m = steps["methods"][method], memory["methods"][method]
        lines.append(
            f"| {method} | {t['trainable_params']:,} | {t['median_step_s']:.3f} | {t['ratio_to_lora']:.2f}x "
            f"({min(t['rep_ratios']):.2f}-{max(t['rep_ratios']):.2f}) | {m['training_increase_mib']:.1f} | "
            f"{m['training_increase_ratio_to_lora']:.2f}x | {m['total_increase_mib']:.1f} | "
            f"{m['total_increase_ratio_to_lora']:.2f}x |"
        )
    lines += ["", "LoRA peak memory against rank:", "",
              "| rank | trainable params | adapter state MiB (params+grads+AdamW, computed) | training RSS increase MiB | "
              "total RSS increase MiB |", "|---|---|---|---|---|"]
    for rank, m in memory["lora_by_rank"].items():
        lines.append(f"| {rank} | {m['trainable_params']:,} | {m['adapter_state_mib']:.1f} | {m['training_increase_mib']:.1f} | "
                     f"{m['total_increase_mib']:.1f} |")
    lines += ["", "RSS is the process's resident memory (allocator caching included); differences of a few MiB are noise.",
              "Absolute times depend on this machine and its load; compare the ratios."]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = results["step_time"]["methods"]
    ratios = [steps[m]["ratio_to_lora"] for m in METHODS]
    low = [r - min(steps[m]["rep_ratios"]) for r, m in zip(ratios, METHODS)]
    high = [max(steps[m]["rep_ratios"]) - r for r, m in zip(ratios, METHODS)]
    bars = left.bar(METHODS, ratios, yerr=[low, high], capsize=4, color=["#4c72b0", "#dd8452", "#55a868"])
    left.bar_label(bars, labels=[f"{r:.2f}x" for r in ratios], padding=3)
    left.axhline(1.0, color="grey", lw=0.8, ls="--")
    left.set_ylabel("step time / lora step time")
    left.set_title("Step time vs lora (median over reps; min-max)")
    by_rank = results["memory"]["lora_by_rank"]
    ranks = [int(r) for r in by_rank]
    right.plot(ranks, [by_rank[str(r)]["training_increase_mib"] for r in ranks], "o-", label="training increase")
    right.plot(ranks, [by_rank[str(r)]["total_increase_mib"] for r in ranks], "s--", label="total increase (model included)")
    right.plot(ranks, [by_rank[str(r)]["adapter_state_mib"] for r in ranks], "^:", label="adapter state (computed)")
    right.set_xlabel("LoRA rank")
    right.set_ylabel("peak RSS increase (MiB)")
    right.set_title("lora: peak memory vs rank (fresh process each)")
    right.legend()
    save_figure(fig, path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few steps, two ranks, one child each (< 90 s)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--steps", type=int, help="timed steps per method per repetition")
    parser.add_argument("--reps", type=int, help="round-robin repetitions")
    parser.add_argument("--ranks", help="LoRA ranks for the memory sweep, comma-separated")
    parser.add_argument("--mem-steps", type=int)
    parser.add_argument("--mem-repeats", type=int)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a shared machine")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=CONFIG["lora_rank"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    apply_defaults(args, SMOKE if args.smoke else FULL)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.rank, args.mem_steps, args.data)))
        return 0
    started = time.perf_counter()
    results: dict[str, Any] = {
        "setup": setup_info(),
        "settings": {"smoke": args.smoke, "model": "all-MiniLM-L6-v2", "tasks": list(TASKS), "rows_per_task": ROWS_PER_TASK,
                     "max_seq_len": MAX_SEQ_LEN, "config": CONFIG, "warmup": args.warmup, "steps": args.steps,
                     "reps": args.reps, "ranks": [int(r) for r in args.ranks.split(",")], "mem_steps": args.mem_steps,
                     "mem_repeats": args.mem_repeats},
    }
    results["step_time"] = time_steps(args)
    gc.collect()
    results["memory"] = measure_memory(args)
    results["wall_seconds"] = time.perf_counter() - started
    return publish(args.out, NAME, results, summarize, plot)


if __name__ == "__main__":
    sys.exit(main())
