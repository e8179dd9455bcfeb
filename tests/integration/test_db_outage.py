"""PostgreSQL goes away for 30 s mid-study: the API answers 503, the runner waits it out,
nothing is lost, the study completes.

The service reaches PostgreSQL through a TCP proxy the test cuts (every connection closed,
new ones refused) and restores; the shared database server itself is never touched.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from searchsvc.client import Client
from searchsvc.local_server import LocalServer, free_port
from searchsvc.store import Store
from tests.integration.conftest import LiveService, study_spec
from tests.integration.helpers import assert_each_epoch_once, optuna_history, wait_for
from tests.utils.databases import fresh_postgres
from tests.utils.tasks import write_task
from tests.utils.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

OUTAGE_S = 30
EPOCHS = 4


def test_a_database_outage_loses_nothing(tmp_path: Path, tiny_bert: str) -> None:
    tasks = [write_task(tmp_path / "data", "senti", "single", seed=1), write_task(tmp_path / "data", "pairs", "pair", seed=2)]
    with fresh_postgres() as url:
        direct = make_url(url)
        proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432).start()
        proxied = direct.set(port=proxy.port).render_as_string(hide_password=False)
        store = Store.open(url)  # the test's own view, not through the proxy
        _, token = store.issue_token("tester")
        server = LocalServer(database_url=proxied, data_dir=tmp_path / "data-dir", ray_num_cpus=2, dashboard_port=free_port())
        with server, Client(server.url, token) as client:
            live = LiveService(server, client, store, tasks, tiny_bert)
            study = client.create_study(study_spec(live, name="outage", search={"num_trials": 2, "max_concurrent": 1},
                                                   train={"max_epochs": EPOCHS, "patience": EPOCHS, "batch_size": 8,
                                                          "max_seq_len": 16, "seed": 0}))
            wait_for(lambda: any(t.num_reports >= 1 for t in store.list_trials(study.id)), poll_s=0.1, what="a first report")
            proxy.cut()
            cut_at = time.monotonic()
            answers = []
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
                while time.monotonic() - cut_at < OUTAGE_S:
                    answers.append(http.get(f"/v1/studies/{study.id}"))
                    time.sleep(2)
                proxy.restore()
                recovered = wait_for(lambda: http.get(f"/v1/studies/{study.id}").status_code == 200, poll_s=0.5,
                                     timeout_s=60, what="the API to answer again")
            study.wait(timeout=600, poll_s=0.5)
            trials = store.list_trials(study.id)
            reports = {t.id: [r.epoch for r in store.list_reports(study.id, t.id)] for t in trials}
            history = optuna_history(url, study.id)
            logs = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "data-dir" / "logs").glob("*.log"))
        store.close()
        proxy.close()

    assert answers and all(a.status_code == 503 for a in answers), [(a.status_code, a.text[:200]) for a in answers]
    for answer in answers:
        detail = answer.json()["detail"]
        assert "database is unavailable" in detail and "Traceback" not in answer.text, detail
    assert recovered
    assert study.state == "completed", logs[-6000:]
    assert len(trials) == 2 and all(t.state == "completed" and t.attempt == 1 for t in trials), [(t.state, t.error) for t in trials]
    assert all(epochs == list(range(1, EPOCHS + 1)) for epochs in reports.values()), reports  # none lost
    assert_each_epoch_once({i: [{"epoch": e} for e in epochs] for i, epochs in reports.items()})  # none twice
    assert sorted(state for state, _ in history) == ["COMPLETE", "COMPLETE"], history
    assert "the database is unavailable" in logs and "retrying" in logs  # the runner did meet the outage
