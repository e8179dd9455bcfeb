"""``searchsvc dashboard``: optuna-dashboard on the service's Optuna storage (an optional extra).

It reads the database directly, like ``searchsvc token create``: every study in it, of
every user, so it is for whoever runs the service (run it on the server's machine, or
point ``--database-url`` at the service's database). Each Optuna trial carries our trial
id and per-task scores as user attributes (see ``searchsvc.dispatch.optuna_attrs``), which
the dashboard shows on the trial's page.
"""

from __future__ import annotations

import sys

INSTALL_HINT = "pip install 'searchsvc[dashboard]'  (or: pip install optuna-dashboard)"


def run_dashboard(database_url: str, *, host: str, port: int) -> int:
    """Serve optuna-dashboard until interrupted. Returns 2 if optuna-dashboard is missing."""
    try:
        import optuna_dashboard
    except ImportError:
        print("error: `searchsvc dashboard` needs optuna-dashboard, which is not installed", file=sys.stderr)
        print(f"  fix: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from searchsvc.dispatch.optuna_storage import make_optuna_storage, optuna_storage_url

    url, _ = optuna_storage_url(database_url)
    storage = make_optuna_storage(database_url)
    print(f"searchsvc: optuna-dashboard on http://{host}:{port} for {url.split('@')[-1]} "
          "(studies are named searchsvc-study-<id>; Ctrl-C stops it)", file=sys.stderr, flush=True)
    optuna_dashboard.run_server(storage, host=host, port=port)
    return 0
