"""Run ``searchsvc serve`` as a child process and wait until it answers.

Used by the demo and by the integration tests, so both exercise the real server
process exactly as a user starts it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from searchsvc.logs import file_tail


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """A ``searchsvc serve`` child process; use as a context manager."""

    def __init__(
        self,
        *,
        database_url: str,
        data_dir: Path,
        port: int | None = None,
        ray_address: str | None = None,
        ray_num_cpus: int | None = None,
        dashboard_port: int | None = None,
        log_path: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.data_dir = Path(data_dir)
        self.log_path = log_path or self.data_dir / "server.log"
        self._env = {
            **os.environ,
            "SEARCHSVC_DATABASE_URL": database_url,
            "SEARCHSVC_DATA_DIR": str(self.data_dir),
            "SEARCHSVC_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self._env.pop("SEARCHSVC_RAY_ADDRESS", None)
        if ray_address:
            self._env["SEARCHSVC_RAY_ADDRESS"] = ray_address
        if ray_num_cpus:
            self._env["SEARCHSVC_RAY_NUM_CPUS"] = str(ray_num_cpus)
        if dashboard_port:
            self._env["SEARCHSVC_RAY_DASHBOARD_PORT"] = str(dashboard_port)
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, *, timeout_s: float = 120.0) -> LocalServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "searchsvc", "serve"],
            env=self._env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"searchsvc serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"searchsvc serve did not answer within {timeout_s} s:\n{self.log_tail()}")

    def stop(self, *, timeout_s: float = 60.0) -> None:
        """Graceful: SIGINT (like Ctrl-C), then SIGKILL if it hangs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def detach(self) -> int:
        """Leave the server running past this object (``stop`` and the context manager's exit
        no longer touch it); returns its pid. Its output keeps going to ``log_path``."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("the server is not running")
        pid = self.process.pid
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return pid

    def log_tail(self, limit: int = 6000) -> str:
        return file_tail(self.log_path, limit)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
