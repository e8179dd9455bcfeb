"""The dispatcher: claims pending studies and runs each in its own runner process.

It lives in the serve process as a background thread, never in a request handler: the
API only writes a pending study and answers at once. Each tick it reaps runners that
ended, records a failure for a runner that died without recording one, and starts
runners for newly pending studies, up to ``max_running_studies``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from searchsvc.dispatch.study_runner import experiment_name
from searchsvc.store import Store

log = logging.getLogger("searchsvc.dispatcher")


@dataclass
class _Runner:
    study_id: int
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


def _tail(path: Path, limit: int = 8000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return ""


class Dispatcher:
    def __init__(
        self,
        store: Store,
        *,
        database_url: str,
        ray_address: str,
        dashboard_url: str | None,
        data_dir: Path,
        interval_s: float = 1.0,
        max_running: int = 4,
    ) -> None:
        self.store = store
        self.database_url = database_url
        self.ray_address = ray_address
        self.dashboard_url = dashboard_url
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.max_running = max_running
        self._runners: dict[int, _Runner] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._orphans_fail()
        self._thread = threading.Thread(target=self._loop, name="searchsvc-dispatcher", daemon=True)
        self._thread.start()

    def shutdown(self, *, timeout_s: float = 30.0) -> None:
        """Stop dispatching; ask running studies' runners to end and wait for them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        for runner in list(self._runners.values()):
            if runner.process.poll() is None:
                runner.process.terminate()
        for runner in list(self._runners.values()):
            try:
                runner.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                runner.process.kill()
        self._reap()

    def running_study_ids(self) -> list[int]:
        return sorted(self._runners)

    # ---- the loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # one bad tick must not end dispatching for good
                log.exception("dispatcher tick failed")
            self._stop.wait(self.interval_s)

    def tick(self) -> None:
        self._reap()
        free = self.max_running - len(self._runners)
        if free <= 0:
            return
        for study in self.store.claim_pending_studies(limit=free):
            self._launch(study.id)

    def _orphans_fail(self) -> None:
        """Studies left running by an earlier control plane have no runner now."""
        for study in self.store.list_studies(states=["running"]):
            self.store.mark_unfinished_trials(study.id, "failed", error="control plane restarted")
            self.store.finish_study(study.id, "failed", error="the control plane restarted while the study ran")

    def _launch(self, study_id: int) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"study-{study_id}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed when the runner is reaped
        command = [
            sys.executable, "-m", "searchsvc.dispatch.study_runner", str(study_id),
            "--ray-address", self.ray_address,
            "--storage-dir", str(self.data_dir / "ray_results"),
        ]
        env = {**os.environ, "SEARCHSVC_DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.store.set_study_ray_info(study_id, experiment=experiment_name(study_id), dashboard_url=self.dashboard_url)
        self._runners[study_id] = _Runner(study_id, process, log_path, log_file)
        log.info("study %s: runner pid %s, log %s", study_id, process.pid, log_path)

    def _reap(self) -> None:
        for study_id, runner in list(self._runners.items()):
            code = runner.process.poll()
            if code is None:
                continue
            runner.log_file.close()
            del self._runners[study_id]
            study = self.store.get_study(study_id)
            if study.state == "running":  # the runner died before recording an end
                state = "stopped" if study.stop_requested else "failed"
                self.store.mark_unfinished_trials(study_id, state, error=f"runner exited with code {code}")
                self.store.finish_study(study_id, state, error=None if state == "stopped" else
                                        f"runner exited with code {code}; log tail:\n{_tail(runner.log_path)}")
            log.info("study %s: runner exited with %s (%s)", study_id, code, study.state)
