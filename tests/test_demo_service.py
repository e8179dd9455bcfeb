"""The kept demo service's record: a stale one (the pid is gone or is not a server) is ignored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from searchsvc import demo_service


def _record(workdir: Path, pid: int) -> None:
    demo_service.save(workdir, demo_service.KeptService(pid=pid, url="http://127.0.0.1:1", token="ss_x",
                                                        database_url="sqlite://", log_path="/dev/null"))


def test_a_pid_that_is_not_a_server_is_never_signalled(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _record(tmp_path, other.pid)
        assert demo_service.load(tmp_path) is None
        assert not demo_service.record_path(tmp_path).exists()
        _record(tmp_path, other.pid)
        assert demo_service.stop(tmp_path) is None
        assert other.poll() is None  # still alive: not ours to stop
    finally:
        other.kill()
        other.wait()


def test_nothing_recorded_means_nothing_to_stop(tmp_path: Path) -> None:
    assert demo_service.load(tmp_path) is None
    assert demo_service.stop(tmp_path) is None
