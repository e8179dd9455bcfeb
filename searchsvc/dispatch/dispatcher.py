"""The dispatcher: claims pending studies and runs each in its own runner process.

It lives in the serve process as a background thread, never in a request handler: the
API only writes a pending study and answers at once. Each tick it reaps runners that
ended and starts runners for pending studies, within ``max_running`` studies, each
user's ``max_studies_per_user`` running studies and ``max_trials_per_user`` concurrent
trials, the user who runs the fewest studies first (``fairness``).

Faults: runners die with the control plane (Linux parent-death signal), so a killed
control plane leaves no runner behind writing to SQL; on the next start every study
left running is queued again and its runner restores Tune's saved state. A graceful
shutdown interrupts runners the way Ctrl-C does, with the same effect.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from searchsvc.dispatch.fairness import next_study
from searchsvc.dispatch.study_runner import EXIT_INTERRUPTED, experiment_name
from searchsvc.logs import file_tail
from searchsvc.store import Store, Study

log = logging.getLogger("searchsvc.dispatcher")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux: the runner may outlive a killed control plane


@dataclass
class _Runner:
    study_id: int
    owner_id: int
    concurrency: int
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


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
        max_trials_per_user: int | None = None,
        max_studies_per_user: int | None = None,
    ) -> None:
        self.store = store
        self.database_url = database_url
        self.ray_address = ray_address
        self.dashboard_url = dashboard_url
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.max_running = max_running
        self.max_trials_per_user = max_trials_per_user
        self.max_studies_per_user = max_studies_per_user
        self._runners: dict[int, _Runner] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        for study in self.store.requeue_interrupted():
            log.info("study %s was running when the control plane stopped: %s", study.id, study.state)
        self._thread = threading.Thread(target=self._loop, name="searchsvc-dispatcher", daemon=True)
        self._thread.start()

    def shutdown(self, *, timeout_s: float = 60.0) -> None:
        """Stop dispatching; interrupt runners (Tune saves their state) and wait for them.
        Their studies stay running in SQL, so the next start restores them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        for runner in self._runners.values():
            if runner.process.poll() is None:
                runner.process.send_signal(signal.SIGINT)
        for runner in self._runners.values():
            try:
                runner.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                runner.process.kill()
                runner.process.wait()
            runner.log_file.close()
        self._runners.clear()

    # ---- the loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # one bad tick must not end dispatching for good
                log.exception("dispatcher tick failed")
            self._stop.wait(self.interval_s)

    def tick(self) -> None:
        """Reap ended runners, then fill free slots fairly (see ``fairness``): a user at
        their limit of running studies or concurrent trials waits; others do not."""
        self._reap()
        pending = self.store.list_studies(states=["pending"])
        while pending and len(self._runners) < self.max_running:
            running: dict[int, int] = {}
            for runner in self._runners.values():
                running[runner.owner_id] = running.get(runner.owner_id, 0) + 1
            study = next_study(pending, running, max_per_user=self.max_studies_per_user,
                               eligible=lambda s: self._allowed_concurrency(s) > 0)
            if study is None:
                return
            pending.remove(study)
            claimed = self.store.claim_study(study.id)
            if claimed is not None:
                self._launch(claimed, self._allowed_concurrency(claimed))

    def _allowed_concurrency(self, study: Study) -> int:
        wanted = int((study.spec.get("search") or {}).get("max_concurrent", 1))
        if self.max_trials_per_user is None:
            return wanted
        used = sum(r.concurrency for r in self._runners.values() if r.owner_id == study.owner_id)
        return min(wanted, self.max_trials_per_user - used)

    def _launch(self, study: Study, concurrency: int) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"study-{study.id}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed when the runner is reaped
        command = [
            sys.executable, "-m", "searchsvc.dispatch.study_runner", str(study.id),
            "--ray-address", self.ray_address,
            "--storage-dir", str(self.data_dir / "ray_results"),
            "--max-concurrent", str(concurrency),
        ]
        env = {**os.environ, "SEARCHSVC_DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.store.set_study_ray_info(study.id, experiment=experiment_name(study.id), dashboard_url=self.dashboard_url)
        self._runners[study.id] = _Runner(study.id, study.owner_id, concurrency, process, log_path, log_file)
        log.info("study %s: runner pid %s (%s trials at a time), log %s", study.id, process.pid, concurrency, log_path)

    def _reap(self) -> None:
        for study_id, runner in list(self._runners.items()):
            code = runner.process.poll()
            if code is None:
                continue
            # SQL first: if the database is unavailable this raises, and the runner stays
            # listed to be reaped on a later tick instead of being forgotten with its study running.
            study = self.store.get_study(study_id)
            if study.state == "running":
                if code == EXIT_INTERRUPTED and not study.stop_requested:
                    self.store.requeue(study_id)  # restored on the next tick
                else:  # the runner died before recording an end
                    state = "stopped" if study.stop_requested else "failed"
                    self.store.mark_unfinished_trials(study_id, state, error=f"runner exited with code {code}")
                    if state == "failed":  # the tail goes to the server's log, not to the user
                        log.error("study %s: runner exited with code %s; log tail:\n%s",
                                  study_id, code, file_tail(runner.log_path))
                    self.store.finish_study(
                        study_id, state, error=None if state == "stopped" else f"the study's runner exited with code {code}",
                    )
            runner.log_file.close()
            del self._runners[study_id]
            log.info("study %s: runner exited with %s", study_id, code)
