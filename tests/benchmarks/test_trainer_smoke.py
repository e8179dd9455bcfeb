"""The trainer, search-efficiency and quality benchmarks run end to end in their smoke modes.

Each script runs in a subprocess with ``--smoke --out <tmp>`` (never benchmarks/results),
and its JSON is checked for its keys and for sane values: step-time and memory ratios
positive, best-so-far never decreasing, scores in range. Needs ../shared/data and the
MiniLM package (skipped without them); about 3-4 minutes on 2 cores.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SMOKE_LIMIT_S = 600  # each smoke mode aims at < 90 s; 220 s was seen beside a training job: only a hang should fail

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (DATA / "rte" / "train.jsonl").is_file(), reason="needs ../shared/data"),
]


def run_smoke(script: str, out: Path, *extra: str) -> dict[str, Any]:
    assert out.resolve() != (ROOT / "benchmarks" / "results").resolve()
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=SMOKE_LIMIT_S, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    name = script.removesuffix(".py")
    for suffix in ("json", "md", "png"):
        assert (out / f"{name}.{suffix}").is_file(), f"{name}.{suffix} not written"
    results = json.loads((out / f"{name}.json").read_text())
    assert {"setup", "settings"} <= results.keys()
    assert results["settings"]["smoke"] is True
    assert {"torch", "transformers", "peft", "ray", "optuna"} <= results["setup"]["versions"].keys()
    return results


def test_trainer_smoke(tmp_path: Path, benchmarks_on_path: None) -> None:
    results = run_smoke("trainer.py", tmp_path)
    steps, memory = results["step_time"]["methods"], results["memory"]
    assert set(steps) == {"peml", "lora+prefix", "lora"}
    for method, entry in steps.items():
        assert entry["median_step_s"] > 0 and entry["ratio_to_lora"] > 0
        assert all(r > 0 for r in entry["rep_ratios"])
        assert entry["batch_shape"] == [16, 128]
        assert entry["trainable_params"] > 0
        assert memory["methods"][method]["training_increase_ratio_to_lora"] > 0
        assert memory["methods"][method]["total_increase_ratio_to_lora"] > 0
    assert steps["lora"]["ratio_to_lora"] == pytest.approx(1.0)
    # Both prefix methods train LoRA and a prefix generator: more parameters than LoRA alone.
    assert min(steps["peml"]["trainable_params"], steps["lora+prefix"]["trainable_params"]) > steps["lora"]["trainable_params"]
    by_rank = memory["lora_by_rank"]
    assert list(by_rank) == [str(r) for r in results["settings"]["ranks"]]
    params = [by_rank[r]["trainable_params"] for r in by_rank]
    assert params == sorted(params) and len(set(params)) == len(params)
    for entry in by_rank.values():
        assert entry["total_increase_mib"] > 0 and entry["peak_training_mib"] > 0
    # Against the machine's limit: the peak measured before and after, FLOPs per step, MFU from every step.
    for when in ("before", "after"):
        assert results["peak"][when]["float32"]["gflops"] > 0
    settings = results["settings"]
    for entry in steps.values():
        assert len(entry["step_s"]) == settings["steps"] * settings["reps"]
        # MiniLM's 6 layers hold 4 x 384 x 384 + 2 x 384 x 1536 = 1,769,472 weights each in products (embeddings
        # are look-ups): the forward alone is 2 x 6 x 1,769,472 x 2,048 tokens = 43.5 GFLOP, and LoRA in the
        # first layer needs every input gradient, ~as much again. Full fine-tuning would be < 3x that + attention.
        forward = 2 * 6 * 1_769_472 * 16 * 128
        assert 2 * forward < entry["flops_per_step"] < 3.5 * forward
    # PEML's prefix lengthens every attention's keys: more FLOPs than LoRA alone.
    assert steps["peml"]["flops_per_step"] > steps["lora"]["flops_per_step"]
    import trainer

    report = (tmp_path / "trainer.md").read_text()
    assert report == trainer.summarize(results)
    assert "**Not a reference run** (a smoke run;" in report and "MFU median" in report


def test_decoder_path_in_bf16(tmp_path: Path, benchmarks_on_path: None) -> None:
    """The GPU command's code path (a decoder built from a config, the whole model in bf16) at a tiny size on
    the CPU: every method builds, steps with a finite loss, and has its FLOPs counted."""
    import torch
    import trainer
    from _flops import count_flops

    args = trainer.parse_args(["--model", "decoder-tiny", "--dtype", "bfloat16", "--data", str(DATA), "--smoke"])
    args.model_path = trainer.model_path(args, tmp_path)
    assert trainer.output_name(args.model, "cuda:0") == "trainer_decoder-tiny_cuda"
    for method in trainer.METHODS:
        step = trainer.make_trainer(method, 4, args)
        assert all(p.dtype == torch.bfloat16 for p in step.model.parameters())
        assert step.step() > 0 and count_flops(step.step) > 0
        losses = step.model.task_losses(step.batch)
        assert all(torch.isfinite(loss) for loss in losses)


def test_search_efficiency_smoke(tmp_path: Path) -> None:
    results = run_smoke("search_efficiency.py", tmp_path)
    assert set(results["algorithms"]) == {"tpe", "random"}
    for entry in results["algorithms"].values():
        assert len(entry["runs"]) == len(results["settings"]["seeds"])
        for run in entry["runs"]:
            trials = run["trials"]
            assert len(trials) == results["settings"]["trials"]
            best = [t["best_so_far"] for t in trials]
            assert all(not math.isnan(b) for b in best)
            assert all(b2 >= b1 for b1, b2 in zip(best, best[1:])), "best-so-far decreased"
            assert all(0.0 <= b <= 1.0 for b in best)  # accuracies
            elapsed = [t["elapsed"] for t in trials]
            assert elapsed == sorted(elapsed) and elapsed[0] > 0
            assert set(trials[0]["config"]) == set(results["settings"]["space"])
        assert 0.0 <= entry["final_best_mean"] <= 1.0
        assert len(entry["curves"]["by_trial"]) == results["settings"]["trials"]


def test_quality_smoke(tmp_path: Path) -> None:
    methods = "head,lora,lora+lpft,peml,auto"
    results = run_smoke("quality.py", tmp_path, "--methods", methods)
    tasks = results["settings"]["tasks"]
    assert set(results["methods"]) == set(methods.split(","))
    assert -1.0 <= results["reference"]["stsb/zero_shot_cosine"] <= 1.0  # the frozen model's cosine, no training
    for label, entry in results["methods"].items():
        assert len(entry["search_trials"]) == results["settings"]["trials"]
        assert entry["seeds"] == [1, 2]
        for key in [*tasks, "average"]:
            stat = entry["scores"][key]
            assert stat["n"] == 2 and -1.0 <= stat["mean"] <= 1.0 and stat["ci95"] >= 0, (label, key)
        if label != "lora":  # paired with lora over the same seeds
            diffs = [entry["per_seed"]["average"][s] - results["methods"]["lora"]["per_seed"]["average"][s] for s in ("1", "2")]
            assert entry["vs_lora"]["average"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert "prefix_length" not in results["methods"]["lora"]["best_config"]
    assert results["methods"]["auto"]["best_config"]["method"] in ("lora", "lora+prefix", "peml")  # the method was searched

    # Parts already run are reused, and the table is exactly what the report builds from the parts.
    parts = tmp_path / "quality_parts" / "main"
    stamps = {p: p.stat().st_mtime_ns for p in parts.rglob("*.json")}
    rerun = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--smoke", "--out", str(tmp_path),
                            "--methods", "lora"], capture_output=True, text=True, timeout=SMOKE_LIMIT_S, cwd=ROOT, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "search done before" in rerun.stdout and "seed 2: done before" in rerun.stdout
    assert {p: p.stat().st_mtime_ns for p in parts.rglob("*.json") if p.name != "reference.json"} == {
        p: t for p, t in stamps.items() if p.name != "reference.json"}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _quality_report import merge, summarize
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    merged = json.loads((tmp_path / "quality.json").read_text())
    assert (tmp_path / "quality.md").read_text() == summarize(merge(tmp_path, "main", merged["settings"]))
