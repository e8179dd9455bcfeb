"""The service ``searchsvc demo --keep`` leaves running, and how ``searchsvc demo --stop`` ends it.

A kept service is recorded in ``<workdir>/service.json`` (pid, URL, token, dashboard), so
a later command finds it without the user copying numbers around, and a second
``--keep`` in the same folder refuses instead of starting a rival on the same database.
Stopping checks that the pid still is a ``searchsvc serve`` before signalling it: after a
reboot the number may belong to something else.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RECORD = "service.json"


@dataclass(frozen=True)
class KeptService:
    pid: int
    url: str
    token: str
    database_url: str
    log_path: str
    dashboard_url: str | None = None


def record_path(workdir: Path) -> Path:
    return workdir / RECORD


def save(workdir: Path, service: KeptService) -> Path:
    path = record_path(workdir)
    path.write_text(json.dumps(asdict(service), indent=2), encoding="utf-8")
    return path


def load(workdir: Path) -> KeptService | None:
    """The recorded service if its process still runs ``searchsvc serve``; else None (and
    a stale record is removed)."""
    path = record_path(workdir)
    try:
        service = KeptService(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if not is_searchsvc_serve(service.pid):
        path.unlink(missing_ok=True)
        return None
    return service


def is_searchsvc_serve(pid: int) -> bool:
    """Whether ``pid`` runs ``searchsvc serve`` (Linux: from /proc; elsewhere: whether it lives)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return b"serve" in args and any(b"searchsvc" in a for a in args)
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def stop(workdir: Path, *, timeout_s: float = 60.0) -> KeptService | None:
    """Stop the kept service gracefully (SIGINT, like Ctrl-C; SIGKILL after ``timeout_s``).
    Returns what was stopped, or None if nothing was running."""
    service = load(workdir)
    if service is None:
        return None
    os.kill(service.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    while is_searchsvc_serve(service.pid) and not _reaped(service.pid):
        if time.monotonic() > deadline:
            os.kill(service.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    record_path(workdir).unlink(missing_ok=True)
    return service


def _reaped(pid: int) -> bool:
    """Reap ``pid`` if it is our own finished child (a zombie still shows in /proc)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # not our child: /proc tells when it is gone
    return done == pid
