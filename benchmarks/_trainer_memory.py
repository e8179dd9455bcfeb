"""Peak memory of training steps, for ``trainer.py`` (not a benchmark itself).

CPU: each measurement runs in a FRESH subprocess (the script itself with ``--memory-child``) that
builds one model and batch and takes a few steps; it reports the peak resident set size (Linux
``VmHWM``, reset through ``/proc/self/clear_refs`` just before training; ``ru_maxrss`` where that is
refused) less the resident size before training ("training increase": gradients, optimizer state,
activations), and the peak over the whole child less its size after the imports ("total increase":
the model too). A fresh process, because an allocator's cache from an earlier model would hide a
later one's peak.

CUDA: in the benchmark's own process, ``torch.cuda.max_memory_allocated`` over the steps (reset
before them) less the memory allocated before them, and the peak itself: the caching allocator
answers for tensors, not for the process.

Each figure is the median over repeated measurements (``--mem-repeats``, default 3).
"""

from __future__ import annotations

import gc
import json
import resource
import statistics
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Job = tuple[str, int]  # (method, LoRA rank)


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _adapter_state_mib(trainable_params: int) -> float:
    """Parameters + gradients + AdamW's two moments, fp32: what the adapter itself costs."""
    return 16 * trainable_params / 2**20


def child_sample(build: Callable[[], Any], *, method: str, rank: int, steps: int) -> dict[str, Any]:
    """In a fresh interpreter: ``build()`` one trainer, take ``steps`` steps, measure resident memory."""
    after_imports = _status_kib("VmRSS")
    trainer = build()
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
        "trainable_params": trainer.trainable_params, "adapter_state_mib": _adapter_state_mib(trainer.trainable_params),
    }


def in_children(jobs: Sequence[Job], *, repeats: int, command: Callable[[str, int], list[str]],
                env: dict[str, str]) -> dict[Job, list[dict[str, Any]]]:
    """``repeats`` rounds of one fresh child per job (``command(method, rank)``, printing :func:`child_sample`'s
    JSON as its last line); the samples per job."""
    from tqdm import tqdm

    runs: dict[Job, list[dict[str, Any]]] = {job: [] for job in jobs}
    for _ in tqdm(range(repeats), desc="memory repeats", unit="round", position=0):
        for method, rank in tqdm(jobs, desc="memory children", unit="child", leave=False, position=1):
            done = subprocess.run(command(method, rank), capture_output=True, text=True, check=False, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"memory child {method} r={rank} failed:\n{done.stderr[-3000:]}")
            runs[(method, rank)].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def on_cuda(trainers: dict[Job, Any], *, repeats: int, steps: int) -> dict[Job, list[dict[str, Any]]]:
    """``repeats`` rounds of ``steps`` steps of each (already built) trainer on its CUDA device, the allocator's
    peak reset before each; the samples per job."""
    import torch

    runs: dict[Job, list[dict[str, Any]]] = {job: [] for job in trainers}
    for _ in range(repeats):
        for (method, rank), trainer in trainers.items():
            torch.cuda.synchronize(trainer.device)
            torch.cuda.reset_peak_memory_stats(trainer.device)
            before = torch.cuda.memory_allocated(trainer.device)
            for _ in range(steps):
                trainer.step()
            peak = torch.cuda.max_memory_allocated(trainer.device)
            runs[(method, rank)].append({
                "method": method, "rank": rank, "steps": steps, "how": "torch.cuda.max_memory_allocated (reset per run)",
                "peak_training_mib": peak / 2**20, "training_increase_mib": (peak - before) / 2**20,
                "total_increase_mib": peak / 2**20, "trainable_params": trainer.trainable_params,
                "adapter_state_mib": _adapter_state_mib(trainer.trainable_params),
            })
    return runs


def _median_entry(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"training_increase_mib": statistics.median(s["training_increase_mib"] for s in samples),
            "total_increase_mib": statistics.median(s["total_increase_mib"] for s in samples),
            "peak_training_mib": statistics.median(s["peak_training_mib"] for s in samples),
            "trainable_params": samples[0]["trainable_params"], "adapter_state_mib": samples[0]["adapter_state_mib"],
            "how": samples[0]["how"], "samples": samples}


def summarize_runs(runs: dict[Job, list[dict[str, Any]]], *, methods: Sequence[str], reference: str, rank: int,
                   ranks: Sequence[int]) -> dict[str, Any]:
    """Medians per method (at ``rank``, with their ratio to ``reference``) and per rank of ``reference``."""
    lora = _median_entry(runs[(reference, rank)])
    by_method = {}
    for method in methods:
        entry = _median_entry(runs[(method, rank)])
        entry["training_increase_ratio_to_lora"] = entry["training_increase_mib"] / lora["training_increase_mib"]
        entry["total_increase_ratio_to_lora"] = entry["total_increase_mib"] / lora["total_increase_mib"]
        by_method[method] = entry
    by_rank = {str(r): _median_entry(runs[(reference, r)]) for r in ranks}
    return {"methods": by_method, "lora_by_rank": by_rank, "how": lora["how"]}
