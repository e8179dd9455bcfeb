"""Control-plane overhead: the same short trials through searchsvc and through a bare Ray Tune script.

Two measurements, one command:

1. **Wall time**: a study of ``--trials`` trials (the integration tests' tiny BERT, two
   tiny tasks, 1 epoch, 2 trials at a time, TPE) run end to end through searchsvc
   (``searchsvc serve`` with SQLite and its own local Ray, the SDK, the dispatcher, a
   study runner, the SQL callbacks, the artifact export), and the same trials through a
   bare Ray Tune script in its own process (``_bare_tune.py``: the same searcher from
   ``make_searcher`` on the same ``SearchSpec``, a trainable calling ``workers.run_trial`` as
   ``searchsvc/dispatch/trainable.py`` does, the same checkpoint settings; no SQL, no API).
   ``--reps`` pairs (default 4, at least 3 for a headline), the order alternating: searchsvc
   first in pairs 1, 3, ..., bare first in pairs 2, 4, ..., so drift favours neither. Each run
   gets a fresh Ray with ``--cpus`` CPUs whose start is not timed. searchsvc is timed from
   ``POST /v1/studies`` until the SDK sees the study completed; bare from building the
   ``Tuner`` until ``fit()`` returns. The 1-minute load average is recorded before and after
   each run. Reported: searchsvc / bare per pair, and their mean ± sample std.
2. **TPE suggestion latency** (``_tpe_latency.py``): ``searcher.suggest()`` of the study's searcher
   (``make_searcher``: Optuna's multivariate TPE behind Ray's ``OptunaSearch`` and
   ``ConcurrencyLimiter``) after 10, 100 and 500 finished trials fed with
   ``on_trial_complete``; median and p99 over ``--suggestions`` calls at each point, with
   Optuna's history in memory and in an SQLite ``RDBStorage`` (as a searchsvc study keeps it).

**No headline on a busy machine.** The report prints the mean ratio as its headline only when
there are >= 3 pairs, every trial completed, and every recorded load average is at most
``--busy-load``: by default the benchmark's own load (its 2 concurrent trials + 1 for the server,
driver and Ray) plus half the machine's cores of other work (4.0 on 2 cores). Otherwise it says
why ("machine busy: ...") in place of the figure, and the pair ratios stand as measurements only.

Every figure of the report is recomputed from the raw runs by :func:`summarize`, which refuses
keys the script does not write and stored figures that differ from the recomputed ones;
``--rebuild`` rewrites a results file from its raw runs (dropping anything else).

    python benchmarks/overhead.py            # full: 50 trials, 4 alternated pairs, ~40 min on 2 cores
    python benchmarks/overhead.py --smoke    # 2 trials, 2 pairs, fewer suggestions: ~2 min
    python benchmarks/overhead.py --rebuild  # rewrite .json/.md/.png from the raw runs in --out

Results: benchmarks/results/overhead.{json,md,png} (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bare_tune import bare_run  # noqa: E402
from _control_plane import (  # noqa: E402
    ROOT,
    TERMINAL,
    add_output_options,
    mean_std,
    publish,
    pyplot,
    refuse_unknown_keys,
    replot,
    report_tail,
    save_figure,
    save_outputs,
    served,
    setup_info,
    study_spec,
    tiny_workload,
)
from _tpe_latency import tpe_latency  # noqa: E402
from tqdm import tqdm  # noqa: E402

NAME = "overhead"
KNOWN = ("setup", "overhead", "tpe_suggest", "total_seconds")  # the top-level keys this script writes
MIN_PAIRS = 3  # fewer pairs: no headline
MAX_CONCURRENT = 2


# ---- one run of each system ----------------------------------------------------------------------


def run_bare(spec: dict[str, Any], work: Path, *, cpus: int, bar: tqdm) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = work / "spec.json", work / "result.json", work / "bare.log"
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, str(Path(__file__).resolve()), "--bare-run", str(spec_path), str(result_path),
               "--storage", str(work / "ray_results"), "--cpus", str(cpus)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
        started = time.monotonic()
        while process.poll() is None:
            done = sum(1 for p in (work / "ray_results" / "bare").glob("*/result.json") if p.stat().st_size > 0)
            bar.set_postfix_str(f"bare: {done}/{spec['search']['num_trials']} trials reported, {time.monotonic() - started:.0f} s")
            time.sleep(0.5)
    if process.returncode != 0 or not result_path.is_file():
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"the bare Ray Tune run exited with {process.returncode}:\n{tail}")
    return {"system": "bare", **json.loads(result_path.read_text())}


def run_searchsvc(spec: dict[str, Any], work: Path, *, cpus: int, bar: tqdm) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    allowed = [spec["model"], *(task["path"] for task in spec["tasks"])]
    with served(f"sqlite:///{work / 'searchsvc.db'}", work / "data-dir", ray_cpus=cpus, allowed=allowed) as run:
        started = time.perf_counter()
        study = run.client.create_study(spec)
        while study.state not in TERMINAL:
            time.sleep(0.2)
            study.refresh()
            progress = study.progress
            bar.set_postfix_str(f"searchsvc: {progress.get('completed', 0)}/{progress.get('total')} trials, "
                                f"{time.perf_counter() - started:.0f} s")
        wall_s = time.perf_counter() - started
        trials = study.trials()
    if study.state != "completed":
        raise RuntimeError(f"the searchsvc study ended {study.state}: {study.data.get('error')}\n{run.server.log_tail()}")
    return {"system": "searchsvc", "wall_s": wall_s, "startup_s": run.startup_s,
            "completed": sum(t["state"] == "completed" for t in trials), "failed": sum(t["state"] == "failed" for t in trials)}


def busy_threshold(*, max_concurrent: int, machine_cpus: int) -> float:
    """The 1-minute load average above which a run counts as contended (see the module docstring): the
    benchmark's own load (its concurrent trials, plus one for the server, driver and Ray) and half the
    machine's cores of other work."""
    return max_concurrent + 1 + machine_cpus / 2


def pair_order(pair: int) -> tuple[str, str]:
    """The systems of pair ``pair`` in the order they run: searchsvc first in even pairs, bare first in odd
    ones, so whatever drifts during a pair (a warming cache, a neighbour's job) favours neither."""
    return ("searchsvc", "bare") if pair % 2 == 0 else ("bare", "searchsvc")


def pair_stats(runs: list[dict[str, Any]], *, trials: int, busy_load: float) -> dict[str, Any]:
    """Every derived figure of the wall-time part, from the raw ``runs`` alone (the summary recomputes them,
    so a stored figure can never disagree with the runs it came from).

    ``ratio``: searchsvc / bare of the two runs of each pair, mean ± sample std over pairs. ``headline``:
    None when the mean ratio may be printed as the result, else why not (too few pairs, failed trials, a
    load average not recorded, or one above ``busy_load``)."""
    pairs = sorted({r["rep"] for r in runs})
    walls = {s: [next(r["wall_s"] for r in runs if r["rep"] == p and r["system"] == s) for p in pairs]
             for s in ("searchsvc", "bare")}
    ratios = [a / b for a, b in zip(walls["searchsvc"], walls["bare"], strict=True)]
    ratio_mean, ratio_std = mean_std(ratios)
    svc_mean, svc_std = mean_std(walls["searchsvc"])
    bare_mean, bare_std = mean_std(walls["bare"])
    loads = [r.get(k) for r in runs for k in ("loadavg_before", "loadavg_after")]
    max_load = max((x for x in loads if x is not None), default=None)
    if len(pairs) < MIN_PAIRS:
        reason = f"fewer than {MIN_PAIRS} pairs ({len(pairs)})"
    elif any(r["failed"] or r["completed"] != trials for r in runs):
        reason = "a run did not complete all its trials"
    elif None in loads:
        reason = "the load average was not recorded before and after every run"
    elif max_load is not None and max_load > busy_load:
        reason = f"machine busy: the 1-minute load average reached {max_load:.1f}, above the threshold {busy_load:.1f}"
    else:
        reason = None
    return {
        "searchsvc_wall_s": {"mean": svc_mean, "std": svc_std, "values": walls["searchsvc"]},
        "bare_wall_s": {"mean": bare_mean, "std": bare_std, "values": walls["bare"]},
        "ratio": {"mean": ratio_mean, "std": ratio_std, "min": min(ratios), "max": max(ratios), "values": ratios},
        "extra_seconds_per_trial": (svc_mean - bare_mean) / trials,
        "max_loadavg": max_load, "busy_load": busy_load, "headline": reason,
    }


def run_overhead(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    model, tasks = tiny_workload(root / "workload")
    spec = study_spec(name="overhead", model=model, tasks=tasks, num_trials=args.trials, max_concurrent=MAX_CONCURRENT,
                      max_epochs=1)
    order = [(pair, system) for pair in range(args.reps) for system in pair_order(pair)]
    runs: list[dict[str, Any]] = []
    with tqdm(order, desc="overhead runs", unit="run") as bar:
        for index, (pair, system) in enumerate(bar):
            work = root / f"run-{index}-{system}"
            runner = run_searchsvc if system == "searchsvc" else run_bare
            load_before, started_utc = os.getloadavg()[0], time.strftime("%H:%M:%S", time.gmtime())
            run = runner(spec, work, cpus=args.cpus, bar=bar)
            # The 1-minute load average around each run: other work on the machine shows up here.
            run.update(rep=pair, started_utc=started_utc, loadavg_before=load_before, loadavg_after=os.getloadavg()[0])
            runs.append(run)
            tqdm.write(f"{system} #{pair + 1}: {run['wall_s']:.1f} s for {run['completed']} completed trials "
                       f"(start-up, not timed: {run['startup_s']:.1f} s; load {load_before:.1f} -> "
                       f"{run['loadavg_after']:.1f})")
            shutil.rmtree(work, ignore_errors=True)
    return {"spec": spec, "runs": runs, **pair_stats(runs, trials=args.trials, busy_load=args.busy_load)}


# ---- output -----------------------------------------------------------------------------------------


def derived(results: dict[str, Any]) -> dict[str, Any]:
    """:func:`pair_stats` of a results file's raw runs, under the busy threshold its run used (results from
    before the threshold was recorded get the default for their settings)."""
    setup = results["setup"]
    settings = setup["settings"]
    busy = settings.get("busy_load", busy_threshold(max_concurrent=settings["max_concurrent"], machine_cpus=setup["cpus"]))
    return pair_stats(results["overhead"]["runs"], trials=settings["trials"], busy_load=busy)


def summarize(results: dict[str, Any]) -> str:
    """The report, every figure recomputed from the raw runs. Raises ``ValueError`` for keys this script
    does not write, or stored figures that differ from the recomputed ones (``--rebuild`` rewrites them)."""
    refuse_unknown_keys(results, KNOWN, script="overhead.py")
    setup, tpe = results["setup"], results["tpe_suggest"]
    over = derived(results)
    if any(results["overhead"].get(key) != value for key, value in over.items()):
        raise ValueError("overhead.py: the stored figures differ from what its runs give; "
                         "`python benchmarks/overhead.py --rebuild` recomputes them")
    runs, ratio = results["overhead"]["runs"], over["ratio"]
    firsts = [next(r["system"] for r in runs if r["rep"] == pair) for pair in sorted({r["rep"] for r in runs})]
    if over["headline"] is None:
        headline = (f"**searchsvc / bare Ray Tune wall time: {ratio['mean']:.2f}x ± {ratio['std']:.2f}** (mean ± sample "
                    f"std over {len(ratio['values'])} alternated pairs; min {ratio['min']:.2f}x, max {ratio['max']:.2f}x); "
                    f"{over['extra_seconds_per_trial']:.2f} s more per trial.")
    else:
        headline = (f"**No headline figure: {over['headline']}.** The pair ratios below are what was measured, not a "
                    "result: rerun `python benchmarks/overhead.py` on a quiet machine.")
    load = "not recorded" if over["max_loadavg"] is None else f"{over['max_loadavg']:.1f}"
    lines = [
        "# Control-plane overhead",
        "",
        headline,
        "",
        f"A headline needs >= {MIN_PAIRS} pairs, every trial completed, and the 1-minute load average before and "
        f"after every run at most {over['busy_load']:.1f} (the benchmark's own trials + 1, plus half the machine's "
        f"cores of other work); highest seen: {load}.",
        "",
        "## Wall time of the same trials",
        "",
        f"{setup['settings']['trials']} trials of the tiny BERT on two tiny tasks (48 training, 24 dev rows each), "
        "1 epoch, TPE, 2 at a time, 1 CPU each, on a fresh local Ray with "
        f"{setup['settings']['cpus']} CPUs per run. searchsvc: `searchsvc serve` (SQLite) + SDK, timed from "
        "`POST /v1/studies` until the SDK (polling every 0.2 s) sees `completed` (dispatcher tick, runner start, "
        "SQL callbacks, Optuna history in SQL and the best trial's export included). Bare: a Ray Tune script with "
        "the same `make_searcher` searcher, trainable body and checkpoint settings, timed from building the `Tuner` "
        "until `fit()` returns. Ray start-up is not timed in either. Runs are listed in the order they ran "
        f"(first in each pair: {', '.join(firsts)}); each pair's ratio is searchsvc / bare of its own two runs.",
        "",
        "| run | pair | system | wall s | completed | failed | start-up s (not timed) | started (UTC) | load avg before / after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, run in enumerate(runs, 1):
        load = (f"{run['loadavg_before']:.1f} / {run['loadavg_after']:.1f}" if "loadavg_before" in run else "-")
        lines.append(f"| {i} | {run['rep'] + 1} | {run['system']} | {run['wall_s']:.1f} | {run['completed']} | {run['failed']} "
                     f"| {run['startup_s']:.1f} | {run.get('started_utc', '-')} | {load} |")
    svc, bare = over["searchsvc_wall_s"], over["bare_wall_s"]
    lines += [
        "",
        f"searchsvc {svc['mean']:.1f} ± {svc['std']:.1f} s, bare {bare['mean']:.1f} ± {bare['std']:.1f} s "
        f"(mean ± sample std); pair ratios {', '.join(f'{r:.2f}x' for r in ratio['values'])}.",
        "",
        "## TPE suggestion latency",
        "",
        f"`suggest()` of the study's searcher (`make_searcher`: Optuna multivariate TPE with constant liar, "
        f"Ray's `OptunaSearch` + `ConcurrencyLimiter`) over a 3-parameter space, after N trials finished with a "
        f"synthetic score; {setup['settings']['suggestions']} timed suggestions at each N (told as failed, so all "
        "see the same history). `memory`: Optuna's in-memory storage; `sqlite`: an RDBStorage on an SQLite file, "
        "as a searchsvc study keeps its TPE history.",
        "",
        "| storage | finished trials | median ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for storage, points in tpe.items():
        for point, row in points.items():
            lines.append(f"| {storage} | {point} | {row['median_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.1f} |")
    lines += report_tail(results, "overhead.py")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    over, tpe = results["overhead"], results["tpe_suggest"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [1.6, 0.8, 1.4]})
    runs = over["runs"]
    reps = sorted({r["rep"] for r in runs})
    width = 0.38
    for offset, system, color in ((-width / 2, "searchsvc", "tab:blue"), (width / 2, "bare", "tab:gray")):
        values = [next(r["wall_s"] for r in runs if r["system"] == system and r["rep"] == rep) for rep in reps]
        bars = left.bar([rep + offset for rep in reps], values, width, label=system, color=color)
        left.bar_label(bars, fmt="%.0f s", fontsize=8)
    left.set_xticks(reps, [f"pair {rep + 1}" for rep in reps])
    left.set_ylabel("wall time (s)")
    left.set_title(f"{results['setup']['settings']['trials']} trials, run in alternation")
    left.legend(loc="lower right")
    ratio = over["ratio"]
    middle.bar([0], [ratio["mean"]], 0.5, yerr=[ratio["std"]], capsize=8, color="tab:blue")
    middle.scatter([0] * len(ratio["values"]), ratio["values"], color="black", zorder=3, s=18, label="each pair")
    middle.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    middle.set_xlim(-0.8, 0.8)
    middle.set_xticks([0], ["searchsvc / bare"])
    middle.set_ylim(0, max(1.2, max(ratio["values"]) * 1.2))
    middle.set_title(f"wall-time ratio {ratio['mean']:.2f}x ± {ratio['std']:.2f}" if over.get("headline") is None
                     else "wall-time ratio: no headline (see report)")
    middle.legend(loc="upper right", fontsize=8)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    every: set[int] = set()
    for storage, color in zip(tpe, ("tab:green", "tab:purple", "tab:brown"), strict=False):
        points = sorted(tpe[storage], key=int)
        xs = [int(p) for p in points]
        every.update(xs)
        right.plot(xs, [tpe[storage][p]["median_ms"] for p in points], marker="o", color=color, label=f"{storage}: median")
        right.plot(xs, [tpe[storage][p]["p99_ms"] for p in points], marker="s", linestyle="--", color=color,
                   label=f"{storage}: p99")
    right.set_xscale("log")
    right.set_xticks(sorted(every), [str(x) for x in sorted(every)])
    right.xaxis.set_minor_formatter(NullFormatter())
    values = [row[key] for rows in tpe.values() for row in rows.values() for key in ("median_ms", "p99_ms")]
    if values and max(values) > 20 * min(values):  # storages differ by orders of magnitude: log scale
        right.set_yscale("log")
        right.yaxis.set_major_formatter(ScalarFormatter())
        right.yaxis.set_minor_formatter(NullFormatter())
    else:
        right.set_ylim(bottom=0)
    right.set_xlabel("finished trials in the history")
    right.set_ylabel("suggest() latency (ms)")
    right.set_title("TPE suggestion latency")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle("searchsvc control-plane overhead", fontsize=12)
    save_figure(fig, path, dpi=120)


def rebuild(out: Path) -> int:
    """``--rebuild``: rewrite ``<out>/overhead.json`` (and its .md and .png) from the raw runs it holds: keeps
    only the keys this script writes and recomputes every derived figure, so a file changed by hand or written by
    an older version of the script says again only what its runs measured. Exit status 0."""
    raw = json.loads((out / f"{NAME}.json").read_text())
    dropped = sorted(set(raw) - set(KNOWN))
    results = {key: raw[key] for key in KNOWN if key in raw}
    results["overhead"] = {"spec": raw["overhead"]["spec"], "runs": raw["overhead"]["runs"], **derived(results)}
    save_outputs(out, NAME, results, summarize, plot)
    print(f"rebuilt {out / NAME}.json from its {len(results['overhead']['runs'])} runs"
          + (f"; dropped {', '.join(dropped)}" if dropped else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny version: 2 trials, 2 pairs, 5 suggestions")
    parser.add_argument("--trials", type=int, default=None, help="trials per run (default 50; 2 with --smoke)")
    parser.add_argument("--reps", type=int, default=None, help="pairs of runs, order alternating (default 4; 2 with --smoke)")
    parser.add_argument("--busy-load", type=float, default=None,
                        help="1-minute load average above which no headline is printed (default: trials at a time + 1 "
                             "+ half the machine's cores)")
    parser.add_argument("--rebuild", action="store_true",
                        help="rewrite .json/.md/.png in --out from the raw runs of the .json there")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of each run's Ray")
    parser.add_argument("--suggestions", type=int, default=None, help="timed suggest() calls per point (default 20; 5)")
    parser.add_argument("--points", default=None, help="finished-trial counts, comma-separated (default 10,100,500; 10,100)")
    parser.add_argument("--storages", default=None, help="TPE history storages (default memory,sqlite; memory with --smoke)")
    add_output_options(parser)
    parser.add_argument("--bare-run", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replot:
        return replot(args.out, NAME, summarize, plot)
    if args.rebuild:
        return rebuild(Path(args.out))
    if args.bare_run:
        return bare_run(Path(args.bare_run[0]), Path(args.bare_run[1]), Path(args.storage), args.cpus)
    args.trials = args.trials or (2 if args.smoke else 50)
    args.reps = args.reps or (2 if args.smoke else 4)
    if args.busy_load is None:
        args.busy_load = busy_threshold(max_concurrent=MAX_CONCURRENT, machine_cpus=os.cpu_count() or 1)
    args.suggestions = args.suggestions or (5 if args.smoke else 20)
    points = [int(p) for p in (args.points or ("10,100" if args.smoke else "10,100,500")).split(",")]
    storages = (args.storages or ("memory" if args.smoke else "memory,sqlite")).split(",")
    setup = setup_info(smoke=args.smoke, trials=args.trials, reps=args.reps, cpus=args.cpus, max_concurrent=MAX_CONCURRENT,
                       suggestions=args.suggestions, points=points, storages=storages, busy_load=args.busy_load)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="searchsvc-bench-overhead-") as tmp:
        root = Path(tmp)
        tpe = {storage: tpe_latency(points, args.suggestions, storage=storage, folder=root) for storage in storages}
        for storage, rows in tpe.items():
            tqdm.write("TPE suggest (" + storage + "): " + ", ".join(
                f"after {p}: median {r['median_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms" for p, r in rows.items()))
        overhead = run_overhead(args, root)
    results = {"setup": setup, "overhead": overhead, "tpe_suggest": tpe, "total_seconds": time.perf_counter() - started}
    return publish(args.out, NAME, results, summarize, plot)


if __name__ == "__main__":
    sys.exit(main())
