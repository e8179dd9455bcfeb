"""Trainer cost against this machine's limit: step time, model FLOPs utilisation and peak memory of ``peml``,
``lora+prefix`` and ``lora``.

Step time: the three methods are built in this process around the pretrained all-MiniLM-L6-v2
(or, with ``--model decoder-1b``, a ~1B Llama built from a config) exactly as a trial builds them
(:class:`FixedBatchTrainer`: LoRA, prefix, PEML's searched prefix and α optimizer, AdamW,
schedule, the trainer's backward with its sampled gradient-conflict measurement), and all train
on ONE fixed batch: 8 rows of sst2 and the 8 longest of rte's first 400, 16 x 128 tokens. A step
is forward + backward + clipping + optimizer (+ α) step. After warm-up steps, the methods take
turns (round-robin repetitions, the starting method rotating) so that machine drift hits all of
them alike; each repetition gives each method's mean step time over ``--steps`` steps and its
ratio to ``lora`` in the same repetition; the reported ratio is the median over repetitions,
with its min-max. Every timed step is kept (``step_s``).

Against the machine's limit (``_flops.py`` says how each is counted): each method's model FLOPs
per step, counted once with ``FlopCounterMode`` over a whole step after the warm-up; the
attainable matmul throughput (GFLOP/s, fp32, and bf16 where the hardware has it natively),
measured in the same run before and after the timed steps (the higher of the two is the peak);
MFU = model FLOPs / step time / the peak of the dtype the model trains in, per timed step, its
median and 10th-90th percentile over every timed step (>= 10 per method in the full run).

Peak memory (``_trainer_memory.py``): on the CPU, each method, and ``lora`` at each rank of
``--ranks``, in a FRESH subprocess (resident memory); on CUDA, the allocator's peak in this
process. The median over ``--mem-repeats`` runs (3 in the full run).

The report leads with "Not a reference run" and what falls short (a smoke run, fewer than 10
timed steps per method, fewer than 3 memory runs, no peak measured) wherever that applies.

    python benchmarks/trainer.py            # full: ~15-20 min on 2 cores
    python benchmarks/trainer.py --smoke    # < 2 min
    python benchmarks/trainer.py --replot   # rewrite .md and .png from the .json in --out

On a GPU (item 4 of issue 11; not run yet: no device was lent to the session that wrote this), one
command: a 1.0 B-parameter Llama of TinyLlama-1.1B's shape built from a config (``_decoder.py``,
random weights, nothing downloaded), the whole model in bf16 on CUDA, 16 + 16 rows of 512 tokens a
step; it reports tokens per second and MFU against the measured bf16 matmul peak, and writes
``trainer_decoder-1b_cuda.{json,md,png}``:

    python benchmarks/trainer.py --model decoder-1b --device cuda --dtype bfloat16

Results: benchmarks/results/trainer.{json,md,png}. Data: ../shared/data (never copied; ``--data``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _trainer_memory as memory
from _common import percentile, replot
from _trainer_common import (
    DATA,
    RESULTS,
    FixedBatchTrainer,
    apply_defaults,
    minilm,
    publish,
    pyplot,
    refuse_unknown_keys,
    save_figure,
    setup_info,
    setup_markdown,
    study_spec,
    task_specs,
)

NAME = "trainer"
KNOWN = ("setup", "settings", "step_time", "memory", "peak", "wall_seconds")  # the top-level keys this script writes
METHODS = ("peml", "lora+prefix", "lora")
REFERENCE = "lora"
TASKS = ("sst2", "rte")
MODELS = ("minilm", "decoder-1b", "decoder-tiny")  # decoder-tiny: the GPU path's code at a size a CPU test runs
POOL_ROWS = 400  # rows read per task to find the long rte rows
# The shared configuration of benchmarks/methods_minilm.py.
CONFIG = {"lr": 5e-3, "lora_rank": 8, "prefix_length": 10, "nas_cells": 6, "entropy_lambda": 1e-3, "arch_lr": 3e-3,
          "grad_alpha": 1.0, "warmup_ratio": 0.06}
# Every allocation above 128 KiB straight from mmap and back to the OS when freed (glibc's threshold
# otherwise adapts upwards and keeps freed blocks resident), so RSS follows the live tensors.
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
FULL = {"warmup": 10, "steps": 10, "reps": 8, "ranks": "8,16,32,64,96", "mem_steps": 6, "mem_repeats": 3,
        "peak_size": 2048, "peak_repeats": 10}
SMOKE = {"warmup": 1, "steps": 2, "reps": 2, "ranks": "8,32", "mem_steps": 2, "mem_repeats": 1,
         "peak_size": 1024, "peak_repeats": 3}
GPU = {"peak_size": 8192, "peak_repeats": 10, "ranks": str(CONFIG["lora_rank"])}  # CUDA: no rank sweep
# Rows per task and tokens per row. decoder-1b: 16 + 16 rows of 512 (16k tokens a step; its saved activations,
# ~50 GB in bf16 by a rough count, fit beside three 1 B models on an 80-141 GB GPU).
BATCH = {"minilm": (8, 128), "decoder-1b": (16, 512), "decoder-tiny": (4, 64)}
MIN_STEPS, MIN_MEMORY_RUNS = 10, 3  # what a reference run needs


def make_trainer(method: str, rank: int, args: argparse.Namespace) -> FixedBatchTrainer:
    spec = study_spec(name=f"bench-{method}", model=args.model_path, tasks=task_specs(TASKS, args.data), method=method,
                      train={"batch_size": 2 * args.rows_per_task, "max_seq_len": args.max_seq_len, "seed": 0,
                             "max_train_examples": POOL_ROWS, "max_dev_examples": 8, "subset": "first"})
    return FixedBatchTrainer(spec, {**CONFIG, "lora_rank": rank}, rows_per_task=args.rows_per_task,
                             device=args.device, dtype=args.dtype)


def model_path(args: argparse.Namespace, folder: Path) -> str:
    """The pretrained MiniLM, or a decoder built from its config into ``folder``."""
    if args.model == "minilm":
        return str(minilm())
    from _decoder import build_decoder

    size = args.model.removeprefix("decoder-")
    return str(build_decoder(folder / args.model, size=size, task_folders=[Path(args.data) / t for t in TASKS]))


# ---- the machine's limit ------------------------------------------------------------------------


def measure_peaks(args: argparse.Namespace) -> dict[str, Any]:
    """Attainable matmul GFLOP/s on ``args.device``: fp32 always, bf16 where the hardware has it natively."""
    import torch
    from _flops import matmul_peak, native_bf16

    per_repeat = 10 if args.device.startswith("cuda") else 3
    peaks = {"float32": matmul_peak(torch.float32, size=args.peak_size, repeats=args.peak_repeats, device=args.device,
                                    per_repeat=per_repeat)}
    if native_bf16(args.device):
        peaks["bfloat16"] = matmul_peak(torch.bfloat16, size=args.peak_size, repeats=args.peak_repeats,
                                        device=args.device, per_repeat=per_repeat)
    return peaks


# ---- step time (this process) ------------------------------------------------------------------


def time_steps(trainers: dict[str, FixedBatchTrainer], args: argparse.Namespace) -> dict[str, Any]:
    from _flops import count_flops
    from tqdm import tqdm

    for trainer in tqdm(trainers.values(), desc="warm-up", unit="model"):
        for _ in range(args.warmup):
            trainer.step()
    # One more step per method, under the FLOP counter (slower, so not timed).
    flops = {m: count_flops(t.step) for m, t in tqdm(trainers.items(), desc="count FLOPs", unit="model")}
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
            "min_step_s": min(times[method]), "max_step_s": max(times[method]), "step_s": times[method],
            "ratio_to_lora": statistics.median(ratios), "rep_ratios": ratios, "rep_mean_step_s": [r[method] for r in reps],
            "trainable_params": t.trainable_params, "total_params": t.total_params,
            "batch_shape": list(t.batch.input_ids.shape), "flops_per_step": flops[method],
        }
    return {"methods": methods, "real_token_share": trainers[REFERENCE].real_token_share}


def measure_memory(trainers: dict[str, FixedBatchTrainer], args: argparse.Namespace) -> dict[str, Any]:
    ranks = [int(r) for r in args.ranks.split(",")]
    rank = CONFIG["lora_rank"]
    if args.device.startswith("cuda"):
        runs = memory.on_cuda({(m, rank): t for m, t in trainers.items()}, repeats=args.mem_repeats, steps=args.mem_steps)
        return memory.summarize_runs(runs, methods=METHODS, reference=REFERENCE, rank=rank, ranks=[rank])
    trainers.clear()  # the children measure; this process's models would only crowd the machine
    gc.collect()
    jobs = [(m, rank) for m in METHODS if m != REFERENCE]
    jobs += [(REFERENCE, r) for r in sorted(set(ranks) | {rank})]  # lora at rank 8 is the method's own run

    def command(method: str, job_rank: int) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--memory-child", method, "--rank", str(job_rank),
                "--mem-steps", str(args.mem_steps), "--data", args.data, "--model", args.model,
                "--model-path", args.model_path, "--dtype", args.dtype, "--rows-per-task", str(args.rows_per_task),
                "--max-seq-len", str(args.max_seq_len)] + (["--threads", str(args.threads)] if args.threads else [])

    runs = memory.in_children(jobs, repeats=args.mem_repeats, command=command, env=CHILD_ENV)
    return memory.summarize_runs(runs, methods=METHODS, reference=REFERENCE, rank=rank, ranks=ranks)


# ---- report ------------------------------------------------------------------------------------------


def peak_gflops(results: dict[str, Any], dtype: str) -> float | None:
    """The higher of the before and after measurements of ``dtype``'s peak; None where not measured."""
    found = [results["peak"][when][dtype]["gflops"] for when in ("before", "after")
             if dtype in results.get("peak", {}).get(when, {})]
    return max(found) if found else None


def mfu(entry: dict[str, Any], peak: float) -> dict[str, float]:
    """Per timed step: model FLOPs / step time / peak; median, 10th and 90th percentile."""
    values = [entry["flops_per_step"] / t / (peak * 1e9) for t in entry["step_s"]]
    return {"median": percentile(values, 50), "p10": percentile(values, 10), "p90": percentile(values, 90),
            "n": len(values)}


def shortfalls(results: dict[str, Any]) -> list[str]:
    """Why a results file is not a reference run (empty when it is one)."""
    s = results["settings"]
    out = ["a smoke run"] if s["smoke"] else []
    if s["steps"] * s["reps"] < MIN_STEPS:
        out.append(f"{s['steps'] * s['reps']} timed steps per method (< {MIN_STEPS})")
    if s["mem_repeats"] < MIN_MEMORY_RUNS:
        out.append(f"memory from {s['mem_repeats']} run(s) (< {MIN_MEMORY_RUNS})")
    if peak_gflops(results, "float32") is None:
        out.append("no matmul peak measured in this run, so no MFU")
    return out


def summarize(results: dict[str, Any]) -> str:
    """The report of a results file. Raises ``ValueError`` for keys this script does not write."""
    refuse_unknown_keys(results, KNOWN, script="trainer.py")
    s = results["settings"]
    steps, mem = results["step_time"], results["memory"]
    dtype = s.get("dtype", "float32")
    peak = peak_gflops(results, dtype) or peak_gflops(results, "float32")
    missing = shortfalls(results)
    shape = steps["methods"][REFERENCE]["batch_shape"]
    lines = [
        f"# Trainer: step time, MFU and peak memory, {s['model']} ({s.get('device', 'cpu')}, {dtype})",
        "",
        *([f"**Not a reference run** ({'; '.join(missing)}): figures to be rerun.", ""] if missing else []),
        *setup_markdown(results["setup"]),
        f"- batch: {s['rows_per_task']} sst2 + {s['rows_per_task']} rte rows (the longest of rte's first {POOL_ROWS}), "
        f"padded to {s['max_seq_len']} tokens: shape {shape}, {steps['real_token_share']:.0%} real tokens",
        f"- step = forward + backward + clip + AdamW (+ PEML's α Adam) step; config `{json.dumps(CONFIG)}`",
        f"- step time: {s['warmup']} warm-up steps per method excluded, then {s['reps']} round-robin repetitions of "
        f"{s['steps']} steps per method; ratio = median over repetitions of (method mean / lora mean in that repetition)",
        f"- memory: {mem['how']}; " + ("fresh subprocess per method and rank (MALLOC_MMAP_THRESHOLD_=131072), "
                                       if mem["how"].startswith(("VmHWM", "ru_maxrss")) else "")
        + f"{s['mem_steps']} steps, median of {s['mem_repeats']} run(s)",
    ]
    if "peak" in results:
        found = [f"{d} {peak_gflops(results, d):.0f} GFLOP/s" for d in ("float32", "bfloat16") if peak_gflops(results, d)]
        bf16 = "" if peak_gflops(results, "bfloat16") else "; bf16 not native here, not measured"
        first = results["peak"]["before"]["float32"]
        lines.append(f"- matmul peak, measured in this run (best of {first['repeats']} x {first['per_repeat']} products "
                     f"of {first['size']}x{first['size']}, before and after the timed steps): {', '.join(found)}{bf16}")
        lines.append(f"- model FLOPs: matrix products of one whole step, counted by FlopCounterMode (`benchmarks/_flops.py`); "
                     f"MFU = model FLOPs / step time / the {dtype} peak, median (p10-p90) over every timed step")
    lines += [
        "",
        "| method | trainable params | model GFLOP/step | median s/step | tokens/s | MFU median (p10-p90) "
        "| step time vs lora (median; min-max over reps) | training memory increase MiB | vs lora "
        "| total memory increase MiB | vs lora |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        t, m = steps["methods"][method], mem["methods"][method]
        tokens = shape[0] * shape[1] / t["median_step_s"]
        gflop = f"{t['flops_per_step'] / 1e9:.1f}" if "flops_per_step" in t else "-"
        if peak and "flops_per_step" in t:
            u = mfu(t, peak)
            util = f"{u['median']:.1%} ({u['p10']:.1%}-{u['p90']:.1%})"
        else:
            util = "-"
        lines.append(
            f"| {method} | {t['trainable_params']:,} | {gflop} | {t['median_step_s']:.3f} | {tokens:,.0f} | {util} "
            f"| {t['ratio_to_lora']:.2f}x ({min(t['rep_ratios']):.2f}-{max(t['rep_ratios']):.2f}) "
            f"| {m['training_increase_mib']:.1f} | {m['training_increase_ratio_to_lora']:.2f}x "
            f"| {m['total_increase_mib']:.1f} | {m['total_increase_ratio_to_lora']:.2f}x |"
        )
    lines += ["", "LoRA peak memory against rank:", "",
              "| rank | trainable params | adapter state MiB (params+grads+AdamW, computed) | training memory increase MiB | "
              "total memory increase MiB |", "|---|---|---|---|---|"]
    for rank, m in mem["lora_by_rank"].items():
        lines.append(f"| {rank} | {m['trainable_params']:,} | {m['adapter_state_mib']:.1f} | {m['training_increase_mib']:.1f} | "
                     f"{m['total_increase_mib']:.1f} |")
    lines += ["", "Memory on the CPU is the process's resident memory (allocator caching included); differences of a "
              "few MiB are noise.", "Absolute times depend on this machine and its load; compare the ratios."]
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


MODEL_NAMES = {"minilm": "all-MiniLM-L6-v2",
               "decoder-1b": "a 1.0 B Llama of TinyLlama-1.1B's shape (random init, from a config)",
               "decoder-tiny": "a tiny Llama (random init, from a config)"}


def output_name(model: str, device: str) -> str:
    """``trainer`` for MiniLM on the CPU (the committed reference); other runs get files of their own."""
    return NAME if (model, device.split(":")[0]) == ("minilm", "cpu") else f"{NAME}_{model}_{device.split(':')[0]}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few steps, two ranks, one child each (< 2 min)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--replot", action="store_true", help="only rewrite the .md and .png from the .json in --out")
    parser.add_argument("--model", choices=MODELS, default="minilm", help="minilm (default), or a decoder built from a config")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="the whole model's dtype")
    parser.add_argument("--rows-per-task", type=int, help="rows of each task in the batch (default: the model's)")
    parser.add_argument("--max-seq-len", type=int, help="tokens per row (default: the model's)")
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--steps", type=int, help="timed steps per method per repetition")
    parser.add_argument("--reps", type=int, help="round-robin repetitions")
    parser.add_argument("--ranks", help="LoRA ranks for the memory sweep, comma-separated (CPU only)")
    parser.add_argument("--mem-steps", type=int)
    parser.add_argument("--mem-repeats", type=int)
    parser.add_argument("--peak-size", type=int, help="side of the square matrices of the peak measurement")
    parser.add_argument("--peak-repeats", type=int, help="timings of the peak measurement (the best counts)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a shared machine")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=CONFIG["lora_rank"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows, tokens = BATCH[args.model]
    apply_defaults(args, {"rows_per_task": rows, "max_seq_len": tokens})
    if args.device.startswith("cuda"):
        apply_defaults(args, GPU)
    apply_defaults(args, SMOKE if args.smoke else FULL)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = output_name(args.model, args.device)
    if args.replot:
        return replot(args.out, name, summarize, plot)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.memory_child:
        sample = memory.child_sample(lambda: make_trainer(args.memory_child, args.rank, args), method=args.memory_child,
                                     rank=args.rank, steps=args.mem_steps)
        print(json.dumps(sample))
        return 0
    started = time.perf_counter()
    results: dict[str, Any] = {
        "setup": setup_info(),
        "settings": {"smoke": args.smoke, "model": MODEL_NAMES[args.model], "device": args.device, "dtype": args.dtype,
                     "tasks": list(TASKS), "rows_per_task": args.rows_per_task, "max_seq_len": args.max_seq_len,
                     "config": CONFIG, "warmup": args.warmup, "steps": args.steps, "reps": args.reps,
                     "ranks": [int(r) for r in args.ranks.split(",")], "mem_steps": args.mem_steps,
                     "mem_repeats": args.mem_repeats},
    }
    with tempfile.TemporaryDirectory(prefix="searchsvc-bench-trainer-") as folder:
        args.model_path = model_path(args, Path(folder))
        results["peak"] = {"before": measure_peaks(args)}
        from tqdm import tqdm

        trainers = {m: make_trainer(m, CONFIG["lora_rank"], args) for m in tqdm(METHODS, desc="build", unit="model")}
        results["step_time"] = time_steps(trainers, args)
        results["peak"]["after"] = measure_peaks(args)
        results["memory"] = measure_memory(trainers, args)
    results["wall_seconds"] = time.perf_counter() - started
    return publish(args.out, name, results, summarize, plot)


if __name__ == "__main__":
    sys.exit(main())
