"""The real app served over real HTTP from a thread (uvicorn, no Ray), for CLI and SDK tests.

Cheaper than ``searchsvc serve`` (no Ray, no child process), yet the CLI runs in its own
process and talks to it over a socket exactly as it talks to a deployed service.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from api import create_app
from searchsvc.config import Settings
from searchsvc.local_server import free_port
from searchsvc.store import Store


@dataclass
class ServedApi:
    url: str
    store: Store


@contextmanager
def served_api(database_url: str, *, timeout_s: float = 30.0, **settings: Any) -> Iterator[ServedApi]:
    """Serve ``create_app(dispatch=False)`` on a free port until the block ends (hub model ids
    accepted, as the tests' ``minimal_spec`` names one that is never loaded: nothing trains here).
    ``settings``: more operator settings (``data_dir``, where uploaded datasets go; ``allowed_paths``)."""
    app = create_app(Settings(database_url=database_url, allow_hub_models=True, **settings), dispatch=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="served-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield ServedApi(f"http://127.0.0.1:{port}", app.state.service.store)
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)
