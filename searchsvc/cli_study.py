"""The ``searchsvc study ...`` commands: client side, through the SDK, against any server.

Each command returns its exit code; failures are raised as SDK errors and turned into
plain messages by ``searchsvc.cli`` (see ``searchsvc.cli_errors``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
    study = _client(args).create_study(Path(args.spec), upload=args.upload)
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


def cmd_study_plot(args: argparse.Namespace) -> int:
    """Write each asked-for plot into --out; a kind that has nothing yet still writes a
    figure that says so (the server draws it), so the same command works mid-study."""
    from searchsvc.plots.kinds import PLOT_KINDS

    study = _client(args).study(args.study_id)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for kind in args.kind or list(PLOT_KINDS):
        path = study.plot(kind, out / f"study-{study.id}-{kind}.{args.format}", trial=args.trial, format=args.format)
        print(path)
    return 0


def cmd_study_logs(args: argparse.Namespace) -> int:
    """A study's failures in full: the runner's error, then each failed attempt's log
    (Ray's error file of that trial: the worker's traceback). ``--trial N`` shows one trial
    whatever its state."""
    study = _client(args).study(args.study_id)
    trials = study.trials()
    if args.trial is not None:
        chosen = [t for t in trials if t["number"] == args.trial]
        if not chosen:
            from searchsvc.cli_errors import EXIT_NOT_FOUND

            print(f"error: study {study.id} has no trial #{args.trial} (its trials are numbered 0 to {len(trials) - 1})",
                  file=sys.stderr)
            return EXIT_NOT_FOUND
    else:
        chosen = [t for t in trials if t.get("error") or any(a.get("error") for a in t.get("attempts", []))]
    if study.data.get("error"):
        print(f"=== study {study.id} ({study.state}) error:\n{study.data['error'].rstrip()}\n")
    if not chosen and not study.data.get("error"):
        print(f"study {study.id} ({study.state}): no trial has failed")
        return 0
    for trial in chosen:
        full = study.trial_error(trial["id"])  # the trial list carries one line of each error
        attempts = full.get("attempts") or [{"attempt": trial["attempt"], "state": full["state"], "error": full.get("error")}]
        for attempt in attempts:
            print(f"=== trial #{trial['number']} (id {trial['id']}) attempt {attempt['attempt']}: {attempt['state']}")
            print((attempt.get("error") or "(no error recorded)").rstrip() + "\n")
    return 0


def add_study_commands(sub: Any, client_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``study submit|list|show|watch|stop|pause|resume|plot|logs`` under ``sub``."""
    study = sub.add_parser("study", help="submit and follow studies").add_subparsers(dest="study_command", required=True)
    p = study.add_parser("submit", help="submit a study spec (YAML or JSON); prints the new study id")
    p.add_argument("spec")
    p.add_argument("--wait", action="store_true", help="follow it to the end with a progress bar")
    p.add_argument("--upload", action="store_true",
                   help="upload the spec's local task folders as datasets (for a server without your filesystem)")
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

    from searchsvc.plots.kinds import FORMATS, PLOT_KINDS

    p = study.add_parser("plot", help="save plots of a study (works while it runs)",
                         description="Save plots of a study as images, drawn by the server from what it has stored so far.\n"
                                     + "\n".join(f"  {name:<13} {text}" for name, text in PLOT_KINDS.items()),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study_id", type=int)
    p.add_argument("--kind", action="append", choices=list(PLOT_KINDS), help="a plot kind (repeatable; default: all)")
    p.add_argument("--out", default=".", help="folder for the images (default: here); files are study-ID-KIND.FORMAT")
    p.add_argument("--trial", type=int, help="trial number for alpha and coordination (default: the best so far)")
    p.add_argument("--format", choices=list(FORMATS), default="png")
    client_flags(p)
    p.set_defaults(func=cmd_study_plot)
    p = study.add_parser("logs", help="why trials failed: each failed attempt's log (or one trial's with --trial)")
    p.add_argument("study_id", type=int)
    p.add_argument("--trial", type=int, help="a trial number: show its attempts whatever their state")
    client_flags(p)
    p.set_defaults(func=cmd_study_logs)
