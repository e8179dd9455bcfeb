"""The CLI's client commands against the live server, as a user types them."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import LiveService, study_spec
from tests.test_cli import searchsvc

pytestmark = pytest.mark.integration


def test_submit_wait_show_list_and_stop(live: LiveService, tmp_path) -> None:
    spec = study_spec(live, name="from-cli", search={"num_trials": 2})
    spec_file = tmp_path / "study.json"
    spec_file.write_text(json.dumps(spec))
    env = {"SEARCHSVC_URL": live.server.url, "SEARCHSVC_TOKEN": live.client._http.headers["Authorization"].split()[1]}

    submitted = searchsvc("study", "submit", str(spec_file), "--wait", env=env)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    study_id = int(submitted.stdout.strip().splitlines()[-1])
    assert "best trial #" in submitted.stdout and "completed" in submitted.stdout

    shown = searchsvc("study", "show", str(study_id), "--json", env=env)
    body = json.loads(shown.stdout)
    assert body["study"]["state"] == "completed" and len(body["trials"]) == 2

    listed = searchsvc("study", "list", env=env)
    assert f"study {study_id} 'from-cli': completed" in listed.stdout

    stopped = searchsvc("study", "stop", str(study_id), env=env)
    assert stopped.returncode == 6 and "409" in stopped.stderr  # already finished

    bad = searchsvc("study", "show", str(study_id), env={**env, "SEARCHSVC_TOKEN": "ss_wrong"})
    assert bad.returncode == 4 and "401" in bad.stderr
