"""The ``searchsvc`` command line: serve, study, data, token, train, dashboard, demo.

Client commands (``study ...`` in ``cli_study``, ``data ...`` in ``cli_data``) go through the SDK, so they work against any server;
``serve``, ``token`` and ``train`` act locally. Flags win over ``SEARCHSVC_*`` variables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from searchsvc.config import Settings

    overrides = {
        key: value
        for key, value in {
            "database_url": getattr(args, "database_url", None),
            "ray_address": getattr(args, "ray_address", None),
            "data_dir": getattr(args, "data_dir", None),
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
        }.items()
        if value is not None
    }
    return Settings(**overrides)


# ---- serve ----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from api import create_app
    from searchsvc.model_registry import ModelRegistry
    from searchsvc.signals import shutdown_signals_end_quietly

    settings = _settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # the app reads the registry again at start; a mistake in it is the operator's to fix, not a traceback
        ModelRegistry.load(models_dir=settings.models_dir, models_file=settings.models_file)
    except ValueError as exc:
        print(f"error: model registry: {exc}", file=sys.stderr)
        return 2
    print(f"searchsvc: database {settings.masked_database_url()}", file=sys.stderr)
    print(f"searchsvc: API on http://{settings.host}:{settings.port} (docs at /docs)", file=sys.stderr)
    # SIGTERM (docker stop, Kubernetes) and SIGINT both pause running studies and exit 0.
    with shutdown_signals_end_quietly():
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
    print("searchsvc: stopped; running studies resume on the next start", file=sys.stderr)
    return 0


# ---- token ----------------------------------------------------------------------------


def cmd_token_create(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from searchsvc.store import Store
    from searchsvc.store.models import utcnow

    expires_at = utcnow() + timedelta(days=args.expires_in_days) if args.expires_in_days else None
    store = Store.open(_settings(args).resolved_database_url())
    try:
        user, token = store.issue_token(args.user, label=args.label, expires_at=expires_at)
    finally:
        store.close()
    print(f"token for user {user.name!r} (shown once; export it as SEARCHSVC_TOKEN):", file=sys.stderr)
    print(token)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from searchsvc.store import Store

    store = Store.open(_settings(args).resolved_database_url())
    try:
        tokens = store.list_tokens(store.get_or_create_user(args.user).id)
    finally:
        store.close()
    for token in tokens:
        expires = token.expires_at.isoformat(timespec="seconds") if token.expires_at else "never"
        print(f"{token.id}\t{token.label or '-'}\tcreated {token.created_at.isoformat(timespec='seconds')}\texpires {expires}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from searchsvc.errors import NotFoundError
    from searchsvc.store import Store

    store = Store.open(_settings(args).resolved_database_url())
    try:
        store.revoke_token(store.get_or_create_user(args.user).id, args.token_id)
    except NotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"revoked token {args.token_id}", file=sys.stderr)
    return 0


# ---- train (one trial, no Ray, no API) -----------------------------------------------


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            config[key] = json.loads(raw)
        except json.JSONDecodeError:
            config[key] = raw
    return config


def cmd_train(args: argparse.Namespace) -> int:
    import tempfile

    from searchsvc.client import load_spec
    from searchsvc.errors import SpecError
    from searchsvc.spec import (DEFAULT_HYPERPARAMETERS, HYPERPARAMETERS, METHOD_KEY, METHODS, TASK_WEIGHT_PREFIX,
                                hyperparameter_rule, parse_spec)

    try:
        spec = parse_spec(load_spec(Path(args.spec)))
    except SpecError as exc:
        for path, message in exc.problems:
            print(f"{path}: {message}", file=sys.stderr)
        return 2
    config = {**DEFAULT_HYPERPARAMETERS, **_parse_overrides(args.set or [])}
    # The keys a trial config may hold, as the spec's search space accepts them: the task
    # weights (weight_<task>, for this spec's tasks) and the method too.
    unknown = sorted(key for key in config if hyperparameter_rule(key, spec.task_names()) is None)
    if unknown:
        known = sorted(HYPERPARAMETERS) + [METHOD_KEY] + [f"{TASK_WEIGHT_PREFIX}{name}" for name in spec.task_names()]
        print(f"--set: unknown hyperparameters {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    if METHOD_KEY in config and config[METHOD_KEY] not in METHODS:
        print(f"--set: unknown method {config[METHOD_KEY]!r}; choose one of {', '.join(METHODS)}", file=sys.stderr)
        return 2
    from workers import run_trial

    def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        scores = "  ".join(f"{k.removesuffix('/score')}={v:.4f}" for k, v in metrics.items() if k.endswith("/score"))
        saved = f"  checkpoint {checkpoint_dir}" if checkpoint_dir else ""
        print(f"epoch {int(metrics['epoch'])}: avg_dev_score={metrics['avg_dev_score']:.4f}  "
              f"train_loss={metrics['train_loss']:.4f}  {scores}{saved}", flush=True)

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="searchsvc-train-"))
    workdir.mkdir(parents=True, exist_ok=True)
    best = run_trial(config, spec=spec, report=report, workdir=workdir)
    print(json.dumps({"config": config, "best": best, "workdir": str(workdir)}, indent=2, default=str))
    return 0


# ---- dashboard --------------------------------------------------------------------------


def cmd_dashboard(args: argparse.Namespace) -> int:
    from searchsvc.dashboard import run_dashboard

    return run_dashboard(_settings(args).resolved_database_url(), host=args.host, port=args.port)


# ---- demo -----------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from searchsvc.demo import run_demo, stop_demo

    if args.stop:
        return stop_demo(Path(args.workdir))
    return run_demo(Path(args.workdir), trials=args.trials, epochs=args.epochs, port=args.port, keep=args.keep,
                    method=args.method)


# ---- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from searchsvc.cli_errors import EXIT_CODES_HELP

    parser = argparse.ArgumentParser(prog="searchsvc", description=__doc__.splitlines()[0] if __doc__ else None,
                                     epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="print the full traceback when a command fails")
    sub = parser.add_subparsers(dest="command", required=True)

    def local_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--database-url", help="SQLAlchemy URL (env SEARCHSVC_DATABASE_URL; default ./searchsvc.db)")

    def client_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=os.environ.get("SEARCHSVC_URL"), help="API URL (env SEARCHSVC_URL)")
        p.add_argument("--token", default=os.environ.get("SEARCHSVC_TOKEN"), help="API token (env SEARCHSVC_TOKEN)")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print the full traceback on failure")

    p = sub.add_parser("serve", help="run the API and the dispatcher (SQLite and a local Ray by default)")
    local_flags(p)
    p.add_argument("--ray-address", help="existing Ray cluster (env SEARCHSVC_RAY_ADDRESS; default: start a local Ray)")
    p.add_argument("--data-dir", type=Path, help="checkpoints and logs (env SEARCHSVC_DATA_DIR)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="manage API tokens").add_subparsers(dest="token_command", required=True)
    p = token.add_parser("create", help="create a token (the user is created if new); prints it on the last line")
    p.add_argument("--user", required=True)
    p.add_argument("--label", default="", help="a name to tell it apart in `token list`")
    p.add_argument("--expires-in-days", type=int, default=None, help="default: never expires")
    local_flags(p)
    p.set_defaults(func=cmd_token_create)
    p = token.add_parser("list", help="a user's tokens (ids, labels, expiry; never the secrets)")
    p.add_argument("--user", required=True)
    local_flags(p)
    p.set_defaults(func=cmd_token_list)
    p = token.add_parser("revoke", help="revoke one of a user's tokens by id")
    p.add_argument("token_id", type=int)
    p.add_argument("--user", required=True)
    local_flags(p)
    p.set_defaults(func=cmd_token_revoke)

    from searchsvc.cli_study import add_study_commands

    add_study_commands(sub, client_flags)

    from searchsvc.cli_data import add_data_commands

    add_data_commands(sub, client_flags)

    p = sub.add_parser("train", help="run one trial standalone (no Ray, no API)")
    p.add_argument("spec")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a hyperparameter (repeatable), e.g. lr=0.01")
    p.add_argument("--workdir", help="where checkpoints go (default: a new temporary folder)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("dashboard", help="optuna-dashboard on the service's Optuna history (optional extra: searchsvc[dashboard])")
    local_flags(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("demo", help="start the service, run a small study end to end, print the best adapter")
    p.add_argument("--workdir", default="searchsvc-demo", help="where the demo keeps its model, data and database")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--keep", action="store_true",
                   help="leave the service (and the Ray dashboard) running after the summary; prints how to stop it")
    p.add_argument("--stop", action="store_true", help="stop the service a --keep demo left running in --workdir")
    from searchsvc.demo import DEMO_METHODS

    p.add_argument("--method", choices=DEMO_METHODS, default=DEMO_METHODS[0],
                   help="peml also searches the prefix architecture and coordinates tasks (every plot kind has data)")
    p.set_defaults(func=cmd_demo)
    return parser


EXIT_BROKEN_PIPE = 141  # what a shell reports for a process killed by SIGPIPE


def main(argv: list[str] | None = None) -> int:
    """Run one command; a failure prints a few lines naming cause and fix (see ``cli_errors``)
    and returns that kind's exit code. Tracebacks only with ``--debug``."""
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("SEARCHSVC_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (`searchsvc study show 1 | head`): nothing is wrong, and
        # nothing more can be said to it. Point stdout at /dev/null so the exit flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every failure becomes a plain message
        from searchsvc.cli_errors import explain

        if debug:
            import traceback

            traceback.print_exc()
        has_token = bool(getattr(args, "token", None) or os.environ.get("SEARCHSVC_TOKEN"))
        explained = explain(exc, has_token=has_token)
        for line in explained.lines:
            print(line, file=sys.stderr)
        return explained.code
