"""The chaos benchmark in its smoke mode (one study; a service kill, a worker kill and a
database outage, at moments drawn from the seed): nothing lost, doubled or re-run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE_LIMIT_S = 900  # ~3 min alone on 2 cores; the limit only catches a hang


@pytest.mark.integration
def test_chaos_smoke(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--smoke", "--seed", "1", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_LIMIT_S,
    )
    assert completed.returncode == 0, f"chaos.py failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}"
    for suffix in (".json", ".md", ".png"):
        assert (tmp_path / f"chaos{suffix}").stat().st_size > 0, suffix
    (study,) = json.loads((tmp_path / "chaos.json").read_text())["studies"]
    assert study["completed"], study
    assert (study["reports_lost"], study["reports_duplicated"], study["finished_trials_restarted"]) == (0, 0, 0), study
    applied = [f for f in study["faults"] if f.get("recovery_s") is not None]
    assert {f["kind"] for f in applied} >= {"service", "database"}, study["faults"]  # a worker kill needs a running trial
