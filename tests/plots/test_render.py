"""Every plot kind renders from the store, for a finished and a running study, on both backends."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image
from scipy import stats

from searchsvc.errors import NotFoundError, SpecError
from searchsvc.plots import PLOT_KINDS, SIZES, render_study_plot
from searchsvc.plots.analysis import importance
from searchsvc.plots.data import load_study_data
from searchsvc.store import Store
from tests.utils.study_factory import build_study


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()  # decodes every pixel: a truncated or corrupt PNG fails here
    return image


@pytest.mark.parametrize("running", [False, True], ids=["finished", "running"])
def test_every_kind_renders_at_its_size(store: Store, two_tasks: list[dict[str, Any]], running: bool) -> None:
    study = build_study(store, "alice", two_tasks, running=running)
    assert study.state == ("running" if running else "completed")
    for kind in PLOT_KINDS:
        image = decode(render_study_plot(store, study.id, kind, owner_id=study.owner_id))
        assert image.format == "PNG" and image.size == SIZES[kind], kind
        assert len(set(image.getdata())) > 50, f"{kind}: the image is nearly blank"


def test_svg_and_an_explicit_trial(store: Store, two_tasks: list[dict[str, Any]]) -> None:
    study = build_study(store, "alice", two_tasks)
    svg = render_study_plot(store, study.id, "alpha", owner_id=study.owner_id, trial=0, fmt="svg")
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg
    assert b"trial #0" in svg  # titles stay text in SVG
    with pytest.raises(NotFoundError, match="no trial #9"):
        render_study_plot(store, study.id, "alpha", owner_id=study.owner_id, trial=9)


def test_empty_study_draws_placeholders(store: Store, two_tasks: list[dict[str, Any]]) -> None:
    study = build_study(store, "alice", two_tasks, trials=0, running=True)
    for kind in PLOT_KINDS:
        assert decode(render_study_plot(store, study.id, kind, owner_id=study.owner_id)).size == SIZES[kind]


def test_another_users_study_is_not_found_whatever_the_kind(store: Store, two_tasks: list[dict[str, Any]]) -> None:
    study = build_study(store, "alice", two_tasks)
    bob = store.get_or_create_user("bob")
    for kind in (*PLOT_KINDS, "no-such-kind"):
        with pytest.raises(NotFoundError):
            render_study_plot(store, study.id, kind, owner_id=bob.id)


def test_unknown_kind_and_format_name_the_choices(store: Store, two_tasks: list[dict[str, Any]]) -> None:
    study = build_study(store, "alice", two_tasks)
    with pytest.raises(SpecError) as error:
        render_study_plot(store, study.id, "histogram", owner_id=study.owner_id, fmt="gif")
    problems = dict(error.value.problems)
    assert problems["kind"] == f"unknown plot kind 'histogram'; known: {', '.join(PLOT_KINDS)}"
    assert problems["format"] == "unknown format 'gif'; known: png, svg"


def test_importance_from_the_store(store: Store, two_tasks: list[dict[str, Any]]) -> None:
    # objective = 0.5 + 40 lr (+ epoch terms), so lr is monotone with it: |rho| = 1;
    # lora_rank alternates 4, 8, 4, 8 over trials whose objectives rank 1, 3, 2, 4
    study = build_study(store, "alice", two_tasks)
    scores, used = importance(load_study_data(store, study.id, owner_id=study.owner_id))
    assert used == 4
    assert [(s.name, s.how) for s in scores] == [("lr", "spearman"), ("lora_rank", "spearman")]
    assert scores[0].score == pytest.approx(1.0)
    assert scores[1].score == pytest.approx(abs(stats.spearmanr([4, 8, 4, 8], [1, 3, 2, 4]).statistic))


def test_retried_trial_keeps_the_latest_attempt_per_epoch(store: Store, two_tasks: list[dict[str, Any]]) -> None:
    study = build_study(store, "alice", two_tasks, trials=1, running=True)  # trial 0 reported epoch 1
    trial = store.list_trials(study.id)[0]
    store.retry_trial(trial.id, error="worker died")
    store.start_trial(study.id, ray_trial_id="ray-0", config=trial.config)
    store.add_report(trial.id, epoch=1, objective=0.11, metrics={"avg_dev_score": 0.11})
    data = load_study_data(store, study.id, owner_id=None)
    assert [(r.attempt, r.epoch, r.objective) for r in data.reports[trial.id]] == [(2, 1, 0.11)]
