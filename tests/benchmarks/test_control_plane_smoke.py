"""The control-plane benchmarks run end to end in their smoke mode and write sane results.

Each script runs in a subprocess exactly as a person starts it (``--smoke``), writing to a
temporary ``--out`` folder (never to benchmarks/results).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each smoke run takes ~75 s alone on 2 cores; beside a training job the same run took
# 300 s, so the limit only catches a hang, not a slow machine.
SMOKE_LIMIT_S = 600


def _run_smoke(script: str, out: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_LIMIT_S,
    )
    assert completed.returncode == 0, f"{script} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}"
    name = script.removesuffix(".py")
    for suffix in (".json", ".md", ".png"):
        assert (out / f"{name}{suffix}").stat().st_size > 0, suffix
    return json.loads((out / f"{name}.json").read_text())


def _positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.integration
def test_overhead_smoke(tmp_path: Path) -> None:
    results = _run_smoke("overhead.py", tmp_path)
    assert set(results) >= {"setup", "overhead", "tpe_suggest"}
    overhead = results["overhead"]
    trials = results["setup"]["settings"]["trials"]
    # Pairs alternate which system runs first; each run has its load average before and after.
    assert [r["system"] for r in overhead["runs"]] == ["searchsvc", "bare", "bare", "searchsvc"]
    assert all(_positive(r["loadavg_before"] + 1) and _positive(r["loadavg_after"] + 1) for r in overhead["runs"])
    report = (tmp_path / "overhead.md").read_text()
    assert "**No headline figure: fewer than 3 pairs (2).**" in report  # two smoke pairs never make a headline
    for run in overhead["runs"]:
        assert _positive(run["wall_s"]), run
        assert run["completed"] == trials and run["failed"] == 0, run
    assert _positive(overhead["ratio"]["mean"])
    assert overhead["ratio"]["values"] and all(_positive(r) for r in overhead["ratio"]["values"])
    assert set(overhead) >= {"searchsvc_wall_s", "bare_wall_s", "extra_seconds_per_trial"}
    memory = results["tpe_suggest"]["memory"]
    assert set(memory) == {str(p) for p in results["setup"]["settings"]["points"]}
    for row in memory.values():
        assert _positive(row["median_ms"]) and _positive(row["p99_ms"]) and row["p99_ms"] >= row["median_ms"], row


@pytest.mark.integration
def test_api_load_smoke(tmp_path: Path) -> None:
    results = _run_smoke("api_load.py", tmp_path)
    assert [b["backend"] for b in results["backends"]] == ["sqlite", "postgresql"]
    for backend in results["backends"]:
        assert backend["study_state_during_load"] == "running", backend
        levels = {level["clients"]: level for level in backend["levels"]}
        assert set(levels) == set(results["setup"]["settings"]["levels"]) and 10 in levels
        assert levels[10]["errors"] == 0, levels[10]["error_kinds"]
        for level in levels.values():
            assert level["requests"] > 0 and _positive(level["throughput_rps"]), level
            assert _positive(level["client_cpu_cores"]) and not math.isnan(level["other_cpu_cores"]), level
            assert _positive(level["p50_ms"]) and level["p99_ms"] >= level["p50_ms"], level
            assert set(level["by_endpoint"]) == {"study", "trials", "reports"}
            assert all(e["requests"] > 0 for e in level["by_endpoint"].values()), level["by_endpoint"]
