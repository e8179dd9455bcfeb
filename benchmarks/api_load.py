"""API under load: concurrent readers of a running study, on SQLite and on PostgreSQL.

For each backend: a fresh database, ``searchsvc serve`` on it (its own local Ray with one
CPU), and a study that trains while it is measured (the tiny BERT on two small tasks, one
trial at a time, epochs enough to outlast the measurement). Once a trial has reported, ``N``
concurrent clients (one ``httpx.AsyncClient`` connection each, asyncio, loopback only) read
``GET /v1/studies/{id}``, ``/trials`` and one trial's ``/reports`` in turn, as fast as
they are answered, for a fixed time per level (after a short unmeasured warm-up). Reported
per backend and level: throughput (answered requests per second), p50 and p99 latency,
and errors (exceptions and non-200 answers). Bounded: ``--max-requests`` per level.

    python benchmarks/api_load.py            # full: 10, 50, 200 clients, 10 s each, both backends
    python benchmarks/api_load.py --smoke    # 10 and 50 clients, 3 s each, both backends: < 60 s

The load generator runs on the same machine as the server and the training trial, so
on a small machine the numbers are those of all three sharing its cores. The CPU each of
them used is reported apart, in cores over the level: the server process alone, the load
generator (this process), and the rest of the machine (Ray, the trial, anything else: the
machine's busy time from ``/proc/stat`` less the other two), so a throughput limited by the
generator or by a neighbour shows as such.

Results: benchmarks/results/api_load.{json,md,png} (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from _control_plane import (  # noqa: E402
    TERMINAL,
    add_output_options,
    fresh_database,
    percentile,
    postgres_version,
    publish,
    pyplot,
    refuse_unknown_keys,
    replot,
    report_tail,
    save_figure,
    served,
    setup_info,
    study_spec,
    tiny_workload,
)
from tqdm import tqdm  # noqa: E402

NAME = "api_load"
KNOWN = ("setup", "postgres_version", "backends", "total_seconds")  # the top-level keys this script writes
ENDPOINTS = ("study", "trials", "reports")


# ---- the load generator ---------------------------------------------------------------------------


async def _load(
    url: str, token: str, paths: dict[str, str], *, clients: int, duration_s: float, warmup_s: float,
    max_requests: int, bar: tqdm,
) -> dict[str, Any]:
    """``clients`` loops, each issuing one request after the other; requests that end inside the
    measured window (after ``warmup_s``, for ``duration_s``) count."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    errors: Counter[str] = Counter()
    issued = 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=httpx.Timeout(30.0)) as client:
        begin = time.perf_counter()
        window_start, window_end = begin + warmup_s, begin + warmup_s + duration_s
        order = list(paths.items())

        async def one_client(index: int) -> None:
            nonlocal issued
            turn = index
            while time.perf_counter() < window_end and issued < max_requests:
                name, path = order[turn % len(order)]
                turn += 1
                issued += 1
                started = time.perf_counter()
                try:
                    response = await client.get(path)
                    problem = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                ended = time.perf_counter()
                if window_start <= started and ended <= window_end:
                    if problem is None:
                        latencies[name].append(ended - started)
                    else:
                        errors[problem] += 1

        async def ticker() -> None:
            while time.perf_counter() < window_end:
                await asyncio.sleep(0.5)
                done = sum(len(v) for v in latencies.values())
                bar.set_postfix_str(f"{clients} clients: {done} answered, {sum(errors.values())} errors")

        tick = asyncio.create_task(ticker())
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        tick.cancel()
    every = [x for values in latencies.values() for x in values]
    measured = min(duration_s, max(1e-9, time.perf_counter() - window_start))
    return {
        "clients": clients,
        "duration_s": duration_s,
        "requests": len(every),
        "throughput_rps": len(every) / measured,
        "p50_ms": 1000 * percentile(every, 50),
        "p99_ms": 1000 * percentile(every, 99),
        "max_ms": 1000 * max(every) if every else float("nan"),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "issued_total": issued,
        "capped": issued >= max_requests,
        "by_endpoint": {name: {"requests": len(v), "p50_ms": 1000 * percentile(v, 50), "p99_ms": 1000 * percentile(v, 99)}
                        for name, v in latencies.items()},
    }


# ---- one backend ----------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent busy so far (``/proc/stat``: all but idle and iowait; NaN
    elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _wait(condition, *, timeout_s: float, what: str, poll_s: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def run_backend(backend: str, args: argparse.Namespace, root: Path, workload: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    model, tasks = workload
    allowed = [model, *(task["path"] for task in tasks)]
    with (fresh_database(backend, root / backend) as url,
          served(url, root / backend / "data-dir", ray_cpus=1, allowed=allowed) as run):
        server, client, token, startup_s = run
        spec = study_spec(name=f"api-load-{backend}", model=model, tasks=tasks, num_trials=2, max_concurrent=1,
                          max_epochs=1000)
        study = client.create_study(spec)

        def reporting_trial() -> int | None:
            for trial in study.trials():
                if not args.smoke and not study.reports(trial["id"]):
                    continue
                return int(trial["id"])
            if study.refresh().state in TERMINAL:
                raise RuntimeError(f"the study ended {study.state} before the load: {study.data.get('error')}")
            return None

        trial_id = _wait(reporting_trial, timeout_s=180, what="a trial of the running study")
        paths = {"study": f"/v1/studies/{study.id}", "trials": f"/v1/studies/{study.id}/trials",
                 "reports": f"/v1/studies/{study.id}/trials/{trial_id}/reports"}
        levels = []
        with tqdm(args.levels, desc=f"{backend} load", unit="level") as bar:
            for clients in bar:
                assert server.process is not None
                cpu_before = (_cpu_seconds(server.process.pid), time.process_time(), _machine_busy_seconds(),
                              time.perf_counter())
                level = asyncio.run(_load(server.url, token, paths, clients=clients, duration_s=args.duration,
                                          warmup_s=args.warmup, max_requests=args.max_requests, bar=bar))
                elapsed = time.perf_counter() - cpu_before[3]
                # CPU use over the whole level (warm-up included), in cores: 1.0 = one core busy. The server,
                # the load generator (this process) and the rest of the machine, each apart.
                level["server_cpu_cores"] = (_cpu_seconds(server.process.pid) - cpu_before[0]) / elapsed
                level["client_cpu_cores"] = (time.process_time() - cpu_before[1]) / elapsed
                level["other_cpu_cores"] = ((_machine_busy_seconds() - cpu_before[2]) / elapsed
                                            - level["server_cpu_cores"] - level["client_cpu_cores"])
                level["loadavg_after"] = os.getloadavg()[0]  # other work on the machine shows up here
                levels.append(level)
                tqdm.write(f"{backend}, {clients} clients: {level['throughput_rps']:.0f} req/s, "
                           f"p50 {level['p50_ms']:.1f} ms, p99 {level['p99_ms']:.1f} ms, {level['errors']} errors")
        study.refresh()
        state_during = study.state
        reports_at_end = len(study.reports(trial_id))
        trials_at_end = len(study.trials())
        study.stop()
        try:
            _wait(lambda: study.refresh().state in TERMINAL, timeout_s=60, what="the study to stop")
        except TimeoutError:
            pass  # stopping the server interrupts it anyway; the database is dropped after
    return {"backend": backend, "server_startup_s": startup_s, "study_state_during_load": state_during,
            "reports_of_read_trial_at_end": reports_at_end, "trials_at_end": trials_at_end, "levels": levels}


# ---- output ---------------------------------------------------------------------------------------


def summarize(results: dict[str, Any]) -> str:
    """The report of a results file. Raises ``ValueError`` for keys this script does not write."""
    refuse_unknown_keys(results, KNOWN, script="api_load.py")
    setup = results["setup"]
    settings = setup["settings"]
    lines = [
        "# API under load",
        "",
        f"Concurrent clients reading a running study through `searchsvc serve`, {settings['duration_s']:g} s per level "
        f"after {settings['warmup_s']:g} s of unmeasured warm-up. Each client is an asyncio loop over one keep-alive "
        "connection (`httpx.AsyncClient`) issuing `GET /v1/studies/{id}`, `/trials` and one trial's `/reports` in "
        "turn, each as soon as the previous one is answered. Throughput counts answered (200) requests per second; "
        f"latency is per request, as the client sees it. The study trains one trial at a time (1 CPU of Ray; tiny BERT, "
        f"two tasks of {settings['train_rows_per_task']} training rows) "
        "during the measurement; server, Ray, trial and load generator share the machine's "
        f"{setup['cpus']} cores. CPU, in cores kept busy during the level (1.00 = one core), each apart: the server "
        "process alone (without Ray and the trial); the load generator (the benchmark's own process); the rest of "
        "the machine (Ray, the trial and anything else; '-' where not recorded). Load avg: the machine's 1-minute "
        "load average after the level.",
        "",
        "| backend | clients | req/s | p50 ms | p99 ms | max ms | errors | requests | server CPU | load generator CPU "
        "| rest of machine CPU | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend in results["backends"]:
        for level in backend["levels"]:
            lines.append(f"| {backend['backend']} | {level['clients']} | {level['throughput_rps']:.0f} | {level['p50_ms']:.1f} "
                         f"| {level['p99_ms']:.1f} | {level['max_ms']:.1f} | {level['errors']} | {level['requests']} "
                         f"| {level.get('server_cpu_cores', float('nan')):.2f} | {level.get('client_cpu_cores', float('nan')):.2f} "
                         + (f"| {level['other_cpu_cores']:.2f} " if "other_cpu_cores" in level else "| - ")
                         + (f"| {level['loadavg_after']:.1f} |" if "loadavg_after" in level else "| - |"))
    lines += ["", "Per endpoint (p50 / p99 ms):", "",
              "| backend | clients | " + " | ".join(ENDPOINTS) + " |", "|---|---|" + "---|" * len(ENDPOINTS)]
    for backend in results["backends"]:
        for level in backend["levels"]:
            cells = [f"{level['by_endpoint'][e]['p50_ms']:.1f} / {level['by_endpoint'][e]['p99_ms']:.1f}" for e in ENDPOINTS]
            lines.append(f"| {backend['backend']} | {level['clients']} | " + " | ".join(cells) + " |")
    lines += ["", "Context: " + "; ".join(
        f"{b['backend']}: server start {b['server_startup_s']:.1f} s, study {b['study_state_during_load']} during the load, "
        f"{b['trials_at_end']} trial(s), the read trial had {b['reports_of_read_trial_at_end']} report(s) at the end"
        for b in results["backends"]) + ".",
        *report_tail(results, "api_load.py", setup_lines=[
            f"- PostgreSQL server {results['postgres_version']} at 127.0.0.1:5432; SQLite via Python's sqlite3"])]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = {"sqlite": "tab:blue", "postgresql": "tab:orange"}
    for backend in results["backends"]:
        name = backend["backend"]
        clients = [level["clients"] for level in backend["levels"]]
        color = colors.get(name)
        left.plot(clients, [level["throughput_rps"] for level in backend["levels"]], marker="o", color=color, label=name)
        right.plot(clients, [level["p50_ms"] for level in backend["levels"]], marker="o", color=color, label=f"{name} p50")
        right.plot(clients, [level["p99_ms"] for level in backend["levels"]], marker="s", linestyle="--", color=color,
                   label=f"{name} p99")
    every = sorted({level["clients"] for b in results["backends"] for level in b["levels"]})
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_xticks(every, [str(c) for c in every])
        axis.minorticks_off()
        axis.set_xlabel("concurrent clients")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    left.set_ylim(bottom=0)
    left.set_ylabel("answered requests / s")
    left.set_title("throughput")
    right.set_yscale("log")
    right.set_ylabel("latency (ms)")
    right.set_title("latency per request")
    fig.suptitle(f"searchsvc API under load ({results['setup']['settings']['duration_s']:g} s per level, study training meanwhile)",
                 fontsize=12)
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="10 and 50 clients, 3 s each")
    parser.add_argument("--levels", default=None, help="client counts, comma-separated (default 10,50,200; 10,50 with --smoke)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per level (default 10; 3 with --smoke)")
    parser.add_argument("--warmup", type=float, default=None, help="unmeasured seconds before each level (default 2; 0.5)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--max-requests", type=int, default=500_000, help="cap on requests per level")
    add_output_options(parser)
    args = parser.parse_args(argv)
    if args.replot:
        return replot(args.out, NAME, summarize, plot)
    args.levels = [int(c) for c in (args.levels or ("10,50" if args.smoke else "10,50,200")).split(",")]
    args.duration = args.duration or (3.0 if args.smoke else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.smoke else 2.0)
    backends = args.backends.split(",")
    setup = setup_info(smoke=args.smoke, levels=args.levels, duration_s=args.duration, warmup_s=args.warmup,
                       backends=backends, max_requests=args.max_requests, ray_cpus=1, train_rows_per_task=600)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="searchsvc-bench-api-") as tmp:
        root = Path(tmp)
        workload = tiny_workload(root / "workload", n_train=600, n_dev=50)
        runs = [run_backend(backend, args, root, workload) for backend in backends]
    results = {"setup": setup, "postgres_version": postgres_version() if "postgresql" in backends else None,
               "backends": runs, "total_seconds": time.perf_counter() - started}
    return publish(args.out, NAME, results, summarize, plot)


if __name__ == "__main__":
    sys.exit(main())
