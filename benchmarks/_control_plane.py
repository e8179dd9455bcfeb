"""Helpers for the control-plane benchmarks (``overhead.py``, ``api_load.py``); not a benchmark itself.

- :func:`setup_info` / :func:`setup_markdown`: the machine and versions every result records;
- :func:`write_results`: ``<name>.json`` + ``<name>.md`` (+ the PNG the caller saved) into ``--out``;
- :func:`tiny_workload`: the tiny BERT and two tiny tasks the integration tests use;
- :func:`study_spec`: a study over them (a plain dict, validated by the server or ``parse_spec``);
- :func:`fresh_database`: an SQLite file or a PostgreSQL database ``searchsvc_bench_*``, dropped after;
- :func:`percentile`, :func:`mean_std`: summary statistics; :func:`pyplot`: matplotlib on Agg.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
POSTGRES_ADMIN = os.environ.get("SEARCHSVC_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PACKAGES = ("ray", "optuna", "fastapi", "uvicorn", "sqlalchemy", "psycopg", "httpx", "torch", "transformers")


# ---- setup and output ------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def setup_info(**settings: Any) -> dict[str, Any]:
    """Machine, CPUs, Python and library versions, the start time, and the run's ``settings``."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {
        "machine": f"{platform.system()} {platform.machine()}, {_cpu_model()}",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "settings": settings,
    }


def setup_markdown(setup: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in setup["versions"].items())
    settings = ", ".join(f"{k}={v}" for k, v in setup["settings"].items())
    return [
        f"- machine: {setup['machine']}; {setup['cpus']} CPUs; no GPU used",
        f"- python {setup['python']}; {versions}",
        f"- settings: {settings}",
        f"- started {setup['started_utc']} UTC",
    ]


def write_results(out: str | Path, name: str, results: dict[str, Any], markdown: str) -> Path:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md``; returns the folder."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (folder / f"{name}.md").write_text(markdown)
    return folder


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---- statistics ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation); NaN for no values."""
    data = sorted(float(v) for v in values)
    if not data:
        return math.nan
    position = (len(data) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, NaN for none)."""
    data = [float(v) for v in values]
    if not data:
        return math.nan, math.nan
    return statistics.fmean(data), (statistics.stdev(data) if len(data) > 1 else 0.0)


# ---- workload --------------------------------------------------------------------------


def tiny_workload(root: Path, *, n_train: int = 48, n_dev: int = 24) -> tuple[str, list[dict[str, Any]]]:
    """The integration tests' tiny BERT and two tiny tasks under ``root``: ``(model_path, tasks)``."""
    from tests.utils.tasks import all_words, write_task
    from workers.tiny import build_tiny_model

    model = build_tiny_model(root / "tiny-bert", family="bert", texts=all_words())
    tasks = [
        write_task(root / "data", "senti", "single", n_train=n_train, n_dev=n_dev, seed=1),
        write_task(root / "data", "pairs", "pair", n_train=n_train, n_dev=n_dev, seed=2),
    ]
    return str(model), tasks


def study_spec(
    *, name: str, model: str, tasks: list[dict[str, Any]], num_trials: int, max_concurrent: int, max_epochs: int
) -> dict[str, Any]:
    """A TPE study over lr, prefix_length and lora_rank (the integration tests' space), one CPU a trial."""
    return {
        "name": name,
        "model": model,
        "tasks": tasks,
        "method": "lora+prefix",
        "search": {
            "algorithm": "tpe",
            "num_trials": num_trials,
            "max_concurrent": max_concurrent,
            "seed": 0,
            "space": {
                "lr": {"type": "loguniform", "low": 1e-3, "high": 5e-2},
                "prefix_length": {"type": "int", "low": 2, "high": 8},
                "lora_rank": {"type": "choice", "values": [2, 4]},
            },
        },
        "train": {"max_epochs": max_epochs, "patience": max_epochs, "batch_size": 8, "max_seq_len": 16, "seed": 0},
        "resources": {"cpu": 1},
    }


@contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """A new, empty database: an SQLite file in ``folder``, or a PostgreSQL database named
    ``searchsvc_bench_<hex>`` on :data:`POSTGRES_ADMIN`'s server, dropped (forcibly) afterwards."""
    if backend == "sqlite":
        folder.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        return
    if backend != "postgresql":
        raise ValueError(f"unknown backend {backend!r}")
    import psycopg

    name = f"searchsvc_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_version() -> str:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal
        return f"unreachable ({type(exc).__name__})"


def issue_token(database_url: str, user: str = "bench") -> str:
    """Migrate the database and create an API token for ``user`` (as ``searchsvc token create`` does)."""
    from searchsvc.store import Store

    store = Store.open(database_url)
    try:
        _, token = store.issue_token(user)
    finally:
        store.close()
    return str(token)
