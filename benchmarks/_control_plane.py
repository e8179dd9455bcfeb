"""Helpers for the control-plane benchmarks (``overhead.py``, ``api_load.py``); not a benchmark itself.

- :func:`setup_info` / :func:`setup_markdown`: the machine and versions every result records;
  :func:`report_tail`: the Setup/Reproduce lines that end every report;
- :func:`tiny_workload`: the tiny BERT and two tiny tasks the integration tests use;
- :func:`study_spec`: a study over them (a plain dict, validated by the server or ``parse_spec``);
- :func:`fresh_database`: an SQLite file or a PostgreSQL database ``searchsvc_bench_*``, dropped after;
- :func:`served`: ``searchsvc serve`` on a database, with a token and an SDK client, stopped after.

Writing the files, statistics and plots come from ``_common`` (re-exported here for the scripts).
"""

from __future__ import annotations

import os
import platform
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

# ``x as x``: re-exported, so the control-plane scripts import all they use from this module.
from _common import RESULTS as RESULTS
from _common import ROOT as ROOT
from _common import add_output_options as add_output_options
from _common import cpu_model, package_versions
from _common import mean_std as mean_std
from _common import percentile as percentile
from _common import publish as publish
from _common import pyplot as pyplot
from _common import refuse_unknown_keys as refuse_unknown_keys
from _common import replot as replot
from _common import save_figure as save_figure
from _common import save_outputs as save_outputs
from _common import write_results as write_results

POSTGRES_ADMIN = os.environ.get("SEARCHSVC_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PACKAGES = ("ray", "optuna", "fastapi", "uvicorn", "sqlalchemy", "psycopg", "httpx", "torch", "transformers")
TERMINAL = {"completed", "failed", "stopped"}  # a study in one of these states has ended


# ---- setup and output ------------------------------------------------------------------


def setup_info(**settings: Any) -> dict[str, Any]:
    """Machine, CPUs, Python and library versions, the start time, and the run's ``settings``."""
    return {
        "machine": f"{platform.system()} {platform.machine()}, {cpu_model()}",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": package_versions(PACKAGES),
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


def report_tail(results: dict[str, Any], script: str, *, setup_lines: Sequence[str] = ()) -> list[str]:
    """The last lines of a control-plane report: its setup (plus the caller's ``setup_lines``) and the
    command that reproduces it, so every report ends alike. No free-text notes: a report says only what
    its script measured."""
    setup = results["setup"]
    return ["", "## Setup", "", *setup_markdown(setup), *setup_lines, "",
            f"Reproduce: `python benchmarks/{script}" + (" --smoke" if setup["settings"]["smoke"] else "") + "`.", ""]


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


class Served(NamedTuple):
    """A running ``searchsvc serve``, an SDK client signed in to it, the client's API token (for other
    clients of the same server), and how long the server took to start."""

    server: Any  # searchsvc.local_server.LocalServer
    client: Any  # searchsvc.client.Client
    token: str
    startup_s: float


@contextmanager
def served(database_url: str, data_dir: Path, *, ray_cpus: int, allowed: Sequence[str] = ()) -> Iterator[Served]:
    """``searchsvc serve`` on ``database_url`` with its own local Ray of ``ray_cpus`` CPUs and a token for
    ``bench``; yields it with a client. Only ``server.start()`` is timed. The client is closed, then the
    server stopped, however the block ends (the server object stays readable, e.g. its log tail).
    ``allowed``: the model and task folders the benchmark's specs name (``SEARCHSVC_ALLOWED_PATHS``)."""
    from searchsvc.client import Client
    from searchsvc.local_server import LocalServer, free_port

    token = issue_token(database_url)
    server = LocalServer(database_url=database_url, data_dir=data_dir, ray_num_cpus=ray_cpus, dashboard_port=free_port(),
                         extra_env={"SEARCHSVC_ALLOWED_PATHS": os.pathsep.join(allowed)})
    started = time.perf_counter()
    server.start()
    startup_s = time.perf_counter() - started
    try:
        with Client(server.url, token) as client:
            yield Served(server, client, token, startup_s)
    finally:
        server.stop()
