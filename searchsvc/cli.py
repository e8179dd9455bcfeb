"""The ``searchsvc`` command line: serve, study, token, train, demo.

Client commands (``study ...``) go through the SDK, so they work against any server;
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
    from searchsvc.signals import shutdown_signals_end_quietly

    settings = _settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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


# ---- study (client side) --------------------------------------------------------------


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from searchsvc.client import Client

    return Client(args.url, args.token)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _print_study(study: dict[str, Any]) -> None:
    p = study["progress"]
    print(f"study {study['id']} {study['name']!r}: {study['state']}  "
          f"trials {p['completed']}/{p['total']} completed, {p['running']} running, {p['failed']} failed  "
          f"best {_fmt(p['best_objective'])}")
    if study.get("restarts"):
        print(f"  restored {study['restarts']} time(s) after an interruption")
    if study.get("dashboard_url"):
        print(f"  Ray dashboard: {study['dashboard_url']}  (experiment {study.get('ray_experiment')})")
    if study.get("error"):
        print(f"  error: {study['error'].strip().splitlines()[-1]}")


def _print_best(study: Any) -> None:
    from searchsvc.client import NotFound

    try:
        best = study.best()
    except NotFound:
        print("no trial has reported yet")
        return
    metrics = best["report"]["metrics"]
    print(f"best trial #{best['trial']['number']} (epoch {best['report']['epoch']}): objective {_fmt(best['objective'])}")
    print("  config: " + json.dumps(best["trial"]["config"], sort_keys=True))
    scores = {k: v for k, v in metrics.items() if k.endswith("/score")}
    for key, value in sorted(scores.items()):
        print(f"  {key.removesuffix('/score'):<16} {_fmt(value)}")
    print(f"  checkpoint: {best['report']['checkpoint_path'] or best['trial']['checkpoint_path']}")


def cmd_study_submit(args: argparse.Namespace) -> int:
    from searchsvc.client import InvalidSpec

    client = _client(args)
    try:
        study = client.create_study(Path(args.spec))
    except InvalidSpec as exc:
        print("the spec was rejected:", file=sys.stderr)
        for path, message in exc.problems:
            print(f"  {path}: {message}", file=sys.stderr)
        return 2
    print(f"submitted study {study.id}", file=sys.stderr)
    if args.wait:
        study.wait(progress=True)
        _print_study(study.data)
        _print_best(study)
    print(study.id)
    return 0


def cmd_study_list(args: argparse.Namespace) -> int:
    for study in _client(args).studies(state=args.state):
        _print_study(study.data)
    return 0


def cmd_study_show(args: argparse.Namespace) -> int:
    study = _client(args).study(args.study_id)
    if args.json:
        print(json.dumps({"study": study.data, "trials": study.trials()}, indent=2, default=str))
        return 0
    _print_study(study.data)
    for trial in study.trials():
        print(f"  trial #{trial['number']:<3} {trial['state']:<10} best {_fmt(trial['best_objective']):<8} "
              f"epochs {trial['num_reports']:<3} attempt {trial['attempt']}  {json.dumps(trial['config'], sort_keys=True)}")
        for attempt in trial.get("attempts", [])[:-1]:
            error = (attempt.get("error") or "").strip().splitlines()
            print(f"      attempt {attempt['attempt']} {attempt['state']}: {error[-1] if error else ''}")
    _print_best(study)
    return 0


def cmd_study_watch(args: argparse.Namespace) -> int:
    study = _client(args).study(args.study_id)
    study.wait(progress=True, poll_s=args.interval)
    _print_study(study.data)
    _print_best(study)
    return 0 if study.state == "completed" else 1


def cmd_study_stop(args: argparse.Namespace) -> int:
    study = _client(args).study(args.study_id).stop()
    _print_study(study.data)
    return 0


def cmd_study_pause(args: argparse.Namespace) -> int:
    _print_study(_client(args).study(args.study_id).pause().data)
    return 0


def cmd_study_resume(args: argparse.Namespace) -> int:
    _print_study(_client(args).study(args.study_id).resume().data)
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
    from searchsvc.spec import DEFAULT_HYPERPARAMETERS, HYPERPARAMETERS, parse_spec

    try:
        spec = parse_spec(load_spec(Path(args.spec)))
    except SpecError as exc:
        for path, message in exc.problems:
            print(f"{path}: {message}", file=sys.stderr)
        return 2
    config = {**DEFAULT_HYPERPARAMETERS, **_parse_overrides(args.set or [])}
    unknown = sorted(set(config) - set(HYPERPARAMETERS))
    if unknown:
        print(f"--set: unknown hyperparameters {unknown}; known: {sorted(HYPERPARAMETERS)}", file=sys.stderr)
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


# ---- demo -----------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from searchsvc.demo import run_demo

    return run_demo(Path(args.workdir), trials=args.trials, epochs=args.epochs, port=args.port)


# ---- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="searchsvc", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    def local_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--database-url", help="SQLAlchemy URL (env SEARCHSVC_DATABASE_URL; default ./searchsvc.db)")

    def client_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=os.environ.get("SEARCHSVC_URL"), help="API URL (env SEARCHSVC_URL)")
        p.add_argument("--token", default=os.environ.get("SEARCHSVC_TOKEN"), help="API token (env SEARCHSVC_TOKEN)")

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

    study = sub.add_parser("study", help="submit and follow studies").add_subparsers(dest="study_command", required=True)
    p = study.add_parser("submit", help="submit a study spec (YAML or JSON); prints the new study id")
    p.add_argument("spec")
    p.add_argument("--wait", action="store_true", help="follow it to the end with a progress bar")
    client_flags(p)
    p.set_defaults(func=cmd_study_submit)
    p = study.add_parser("list", help="your studies")
    p.add_argument("--state")
    client_flags(p)
    p.set_defaults(func=cmd_study_list)
    for name, func, text in (("show", cmd_study_show, "a study, its trials and its best trial"),
                             ("watch", cmd_study_watch, "a live progress bar until the study ends"),
                             ("stop", cmd_study_stop, "stop a study (finished epochs are kept)"),
                             ("pause", cmd_study_pause, "pause a study (running trials resume from their checkpoints)"),
                             ("resume", cmd_study_resume, "resume a paused study")):
        p = study.add_parser(name, help=text)
        p.add_argument("study_id", type=int)
        client_flags(p)
        if name == "show":
            p.add_argument("--json", action="store_true")
        if name == "watch":
            p.add_argument("--interval", type=float, default=1.0)
        p.set_defaults(func=func)

    p = sub.add_parser("train", help="run one trial standalone (no Ray, no API)")
    p.add_argument("spec")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a hyperparameter (repeatable), e.g. lr=0.01")
    p.add_argument("--workdir", help="where checkpoints go (default: a new temporary folder)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="start the service, run a small study end to end, print the best adapter")
    p.add_argument("--workdir", default="searchsvc-demo", help="where the demo keeps its model, data and database")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from searchsvc.client import ClientError

    try:
        return int(args.func(args))
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
