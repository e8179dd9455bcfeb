"""A two-node Ray cluster on this machine, started with ``ray start`` as an operator would.

Each node runs ``ray start --block`` in its own process: ending that process takes the
node down, so the test never needs ``ray stop`` (which would hit every Ray on the machine).
Ray here runs with token authentication, so every client sets ``RAY_AUTH_MODE=token``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from searchsvc.local_server import free_port

RAY_ENV = {"RAY_AUTH_MODE": "token"}


class LocalRayCluster:
    def __init__(self, log_dir: Path, *, head_resources: dict[str, float], worker_resources: dict[str, float]) -> None:
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.head_resources = head_resources
        self.worker_resources = worker_resources
        self._processes: list[subprocess.Popen[bytes]] = []
        self.node_ids: dict[str, str] = {}  # resource name -> node id

    def _start(self, name: str, args: list[str]) -> None:
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        log = open(self.log_dir / f"ray-{name}.log", "wb")  # noqa: SIM115 - lives as long as the node
        self._processes.append(subprocess.Popen(
            [ray, "start", *args, "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **RAY_ENV}, start_new_session=True,
        ))

    def start(self, timeout_s: float = 120) -> LocalRayCluster:
        self._start("head", ["--head", f"--port={self.port}", "--num-cpus=1", f"--resources={json.dumps(self.head_resources)}",
                             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"])
        self._wait_for_nodes(1, timeout_s)
        self._start("worker", [f"--address={self.address}", "--num-cpus=2", f"--resources={json.dumps(self.worker_resources)}"])
        nodes = self._wait_for_nodes(2, timeout_s)
        for node in nodes:
            for resource in (*self.head_resources, *self.worker_resources):
                if resource in node["resources"]:
                    self.node_ids[resource] = node["id"]
        return self

    def _wait_for_nodes(self, count: int, timeout_s: float) -> list[dict]:
        program = (
            "import json, ray; ray.init(address=%r, log_to_driver=False);"
            "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))"
        ) % self.address
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env={**os.environ, **RAY_ENV}, timeout=120)
            if out.returncode == 0:
                nodes = json.loads(out.stdout.strip().splitlines()[-1])
                if len(nodes) >= count:
                    return nodes
            time.sleep(2)
        raise RuntimeError(f"Ray nodes did not come up; see {self.log_dir}")

    def stop(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
