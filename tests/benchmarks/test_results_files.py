"""Every committed benchmark report is what its script's own summary makes of its results file.

For each ``benchmarks/results/<name>.json`` with a ``<name>.md`` beside it, the script that writes
it (``<name>.py``; ``search_efficiency_<model>`` and ``trainer_<model>_<device>`` come from
``search_efficiency.py`` and ``trainer.py``) rebuilds the
Markdown from the JSON with its ``summarize`` and the two must be equal: a figure edited by hand
in either file, or a key the script never writes, fails here. ``overhead.py`` goes further: its
summary recomputes every figure from the raw runs, and its headline rules are checked on runs
whose ratios are worked by hand.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
REPORTED = sorted(p for p in RESULTS.glob("*.json") if p.with_suffix(".md").is_file())

pytestmark = pytest.mark.usefixtures("benchmarks_on_path")


def script_for(name: str) -> ModuleType:
    """The module of the script that writes ``<name>.json``."""
    if (BENCHMARKS / f"{name}.py").is_file():
        return importlib.import_module(name)
    for script in ("search_efficiency", "trainer"):  # runs of another model or device get files of their own
        if name.startswith(f"{script}_"):
            return importlib.import_module(script)
    raise AssertionError(f"no script writes benchmarks/results/{name}.json")


def test_every_results_file_has_a_report() -> None:
    assert {p.stem for p in REPORTED} >= {"overhead", "api_load", "trainer", "search_efficiency", "chaos", "quality"}


@pytest.mark.parametrize("path", REPORTED, ids=[p.stem for p in REPORTED])
def test_report_is_what_the_script_writes(path: Path) -> None:
    results = json.loads(path.read_text())
    assert script_for(path.stem).summarize(results) == path.with_suffix(".md").read_text()


# ---- overhead.py: figures from the raw runs, and no headline it cannot stand behind ---------------


def _runs(svc: list[float], bare: list[float], *, load: float | None = 2.0, trials: int = 4) -> list[dict[str, Any]]:
    overhead = importlib.import_module("overhead")
    runs = []
    for pair, (s, b) in enumerate(zip(svc, bare, strict=True)):
        for system in overhead.pair_order(pair):
            run = {"system": system, "wall_s": s if system == "searchsvc" else b, "startup_s": 1.0,
                   "completed": trials, "failed": 0, "rep": pair}
            if load is not None:
                run.update(loadavg_before=load, loadavg_after=load)
            runs.append(run)
    return runs


def test_pairs_alternate_which_system_runs_first() -> None:
    overhead = importlib.import_module("overhead")
    firsts = [overhead.pair_order(p)[0] for p in range(4)]
    assert firsts == ["searchsvc", "bare", "searchsvc", "bare"]
    assert all(set(overhead.pair_order(p)) == {"searchsvc", "bare"} for p in range(4))


def test_ratio_is_the_mean_of_the_pair_ratios_with_its_spread() -> None:
    overhead = importlib.import_module("overhead")
    # Pair ratios 110/100, 105/100, 120/100 = 1.10, 1.05, 1.20: mean 1.11667; deviations -0.01667,
    # -0.06667, +0.08333, squares summing to 0.011667, /2 -> variance 0.0058333, std 0.076376.
    stats = overhead.pair_stats(_runs([110, 105, 120], [100, 100, 100]), trials=4, busy_load=4.0)
    assert stats["ratio"]["values"] == pytest.approx([1.10, 1.05, 1.20])
    assert stats["ratio"]["mean"] == pytest.approx(1.116667, abs=1e-6)
    assert stats["ratio"]["std"] == pytest.approx(0.076376, abs=1e-6)
    assert stats["extra_seconds_per_trial"] == pytest.approx((111.6667 - 100) / 4, abs=1e-4)
    assert stats["headline"] is None


@pytest.mark.parametrize(("svc", "load", "reason"), [
    ([110, 105, 120], 4.5, "machine busy: the 1-minute load average reached 4.5, above the threshold 4.0"),
    ([110, 105], 2.0, "fewer than 3 pairs (2)"),
    ([110, 105, 120], None, "the load average was not recorded before and after every run"),
])
def test_no_headline_when_the_run_cannot_support_one(svc: list[float], load: float | None, reason: str) -> None:
    overhead = importlib.import_module("overhead")
    stats = overhead.pair_stats(_runs(svc, [100] * len(svc), load=load), trials=4, busy_load=4.0)
    assert stats["headline"] == reason


def test_busy_threshold_is_own_load_plus_half_the_machine() -> None:
    overhead = importlib.import_module("overhead")
    assert overhead.busy_threshold(max_concurrent=2, machine_cpus=2) == 4.0
    assert overhead.busy_threshold(max_concurrent=2, machine_cpus=16) == 11.0


def _small_overhead_results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    overhead = importlib.import_module("overhead")
    settings = {"smoke": True, "trials": 4, "reps": 3, "cpus": 2, "max_concurrent": 2, "suggestions": 1,
                "points": [10], "storages": ["memory"], "busy_load": 4.0}
    setup = {"machine": "test", "cpus": 2, "python": "3", "versions": {}, "started_utc": "-", "settings": settings}
    results = {"setup": setup, "tpe_suggest": {"memory": {"10": {"median_ms": 1.0, "p99_ms": 2.0, "max_ms": 2.0}}},
               "total_seconds": 1.0, "overhead": {"spec": {}, "runs": runs}}
    results["overhead"].update(overhead.derived(results))
    return results


def test_headline_only_from_a_quiet_run() -> None:
    overhead = importlib.import_module("overhead")
    quiet = overhead.summarize(_small_overhead_results(_runs([110, 105, 120], [100, 100, 100])))
    assert "**searchsvc / bare Ray Tune wall time: 1.12x ± 0.08**" in quiet
    busy = overhead.summarize(_small_overhead_results(_runs([110, 105, 120], [100, 100, 100], load=9.0)))
    assert "**No headline figure: machine busy" in busy and "wall time: 1.12x" not in busy


def test_summary_refuses_unknown_keys_and_figures_that_disagree_with_the_runs() -> None:
    overhead = importlib.import_module("overhead")
    results = _small_overhead_results(_runs([110, 105, 120], [100, 100, 100]))
    with pytest.raises(ValueError, match="notes"):
        overhead.summarize({**results, "notes": ["the real ratio is 1.04x"]})
    edited = json.loads(json.dumps(results))
    edited["overhead"]["ratio"]["mean"] = 1.04
    with pytest.raises(ValueError, match="--rebuild"):
        overhead.summarize(edited)


def test_rebuild_drops_what_the_script_does_not_write(tmp_path: Path) -> None:
    overhead = importlib.import_module("overhead")
    results = _small_overhead_results(_runs([110, 105, 120], [100, 100, 100]))
    results["notes"] = ["hand-written"]
    results["overhead"]["ratio"]["mean"] = 1.04
    (tmp_path / "overhead.json").write_text(json.dumps(results))
    assert overhead.rebuild(tmp_path) == 0
    rebuilt = json.loads((tmp_path / "overhead.json").read_text())
    assert "notes" not in rebuilt and rebuilt["overhead"]["ratio"]["mean"] == pytest.approx(1.116667, abs=1e-6)
    assert (tmp_path / "overhead.md").read_text() == overhead.summarize(rebuilt)


def test_committed_overhead_results_are_their_runs(tmp_path: Path) -> None:
    """The committed overhead.json holds nothing ``--rebuild`` would drop or change."""
    overhead = importlib.import_module("overhead")
    shutil.copy(RESULTS / "overhead.json", tmp_path / "overhead.json")
    overhead.rebuild(tmp_path)
    assert json.loads((tmp_path / "overhead.json").read_text()) == json.loads((RESULTS / "overhead.json").read_text())
