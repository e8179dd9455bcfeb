"""``searchsvc dashboard`` serves optuna-dashboard on the service's Optuna storage, or says how to install it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import optuna
import pytest

from searchsvc.dispatch.optuna_storage import make_optuna_storage
from searchsvc.local_server import free_port


def test_dashboard_lists_the_services_optuna_studies(tmp_path: Path) -> None:
    pytest.importorskip("optuna_dashboard")
    database_url = f"sqlite:///{tmp_path / 'searchsvc.db'}"
    study = optuna.create_study(study_name="searchsvc-study-7", storage=make_optuna_storage(database_url), direction="maximize")
    trial = study.ask()
    trial.set_user_attr("searchsvc_trial_id", 31)
    study.tell(trial, 0.5)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "searchsvc", "dashboard", "--database-url", database_url, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/studies", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the dashboard did not answer"
                time.sleep(0.3)
        assert response.status_code == 200
        assert [s["study_name"] for s in response.json()["study_summaries"]] == ["searchsvc-study-7"]
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert f"optuna-dashboard on http://127.0.0.1:{port} for sqlite:///{tmp_path / 'searchsvc-optuna.db'}" in err


def test_without_optuna_dashboard_it_says_how_to_install(tmp_path: Path) -> None:
    program = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "optuna_dashboard":
                    raise ImportError("blocked for this test")
        sys.meta_path.insert(0, Block())
        from searchsvc.cli import main
        sys.exit(main(["dashboard", "--database-url", "sqlite:///{tmp_path / 'x.db'}"]))
        """
    )
    result = subprocess.run([sys.executable, "-c", program], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: `searchsvc dashboard` needs optuna-dashboard, which is not installed",
        "  fix: pip install 'searchsvc[dashboard]'  (or: pip install optuna-dashboard)",
    ]
