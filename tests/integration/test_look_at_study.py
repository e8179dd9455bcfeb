"""Looking at a real study: every plot from real reports (PEML + coordination), and Optuna's
copy of the study carrying our trial ids and the per-task scores."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
from PIL import Image

from searchsvc.dispatch.optuna_storage import make_optuna_storage
from searchsvc.plots import PLOT_KINDS, SIZES
from tests.integration.conftest import LiveService, dump_on_failure, study_spec
from tests.test_cli_errors import run_cli

pytestmark = pytest.mark.integration


def test_plots_and_optuna_attributes_of_a_peml_study(live: LiveService, tmp_path: Path) -> None:
    spec = study_spec(live, name="look", method="peml", search={
        "num_trials": 3, "max_concurrent": 2, "seed": 2,
        "space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 5e-2},
                  "grad_alpha": {"type": "uniform", "low": 0.0, "high": 5.0},
                  "nas_cells": {"type": "int", "low": 1, "high": 2}}})
    spec["coordination"] = {"enabled": True, "every_k": 2}
    study = live.client.create_study(spec)
    study.wait(timeout=900, poll_s=0.5)
    assert study.state == "completed", dump_on_failure(live)

    for kind in PLOT_KINDS:
        path = study.plot(kind, tmp_path)
        assert Image.open(io.BytesIO(path.read_bytes())).size == SIZES[kind], kind

    trials = {t["id"]: t for t in study.trials()}
    storage = make_optuna_storage(live.server.database_url)
    optuna_trials = optuna.load_study(study_name=f"searchsvc-study-{study.id}", storage=storage).get_trials()
    assert len(optuna_trials) == 3
    for ot in optuna_trials:
        ours = trials[ot.user_attrs["searchsvc_trial_id"]]
        assert ot.user_attrs["searchsvc_trial_number"] == ours["number"]
        last_report = study.reports(ours["id"])[-1]
        last = last_report["metrics"]
        assert ot.value == pytest.approx(last_report["objective"])  # the selection split's score, not dev's
        assert ot.user_attrs["avg_dev_score"] == pytest.approx(last["avg_dev_score"])
        assert ot.user_attrs["val/avg_dev_score"] == pytest.approx(last["val/avg_dev_score"])
        assert ot.user_attrs["senti/score"] == pytest.approx(last["senti/score"])
        assert ot.user_attrs["pairs/score"] == pytest.approx(last["pairs/score"])
        assert ot.params["lr"] == pytest.approx(ours["config"]["lr"])

    token = live.client._http.headers["Authorization"].split()[1]
    logs = run_cli("study", "logs", str(study.id), url=live.server.url, token=token)
    assert logs.returncode == 0 and logs.stdout.strip() == f"study {study.id} (completed): no trial has failed"
