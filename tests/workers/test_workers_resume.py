"""Which checkpoint a restored trial continues from when a crash left its folder untidy.

Ray keeps a trial's checkpoints as ``checkpoint_000000``, ``checkpoint_000001``... in the
trial's folder and Tune records the latest in its experiment state. A control plane killed
at the wrong moment leaves that record pointing at a folder retention already deleted, or
a newer folder whose copy was cut short. These tests build such folders from real
checkpoints of a tiny trial.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from searchsvc.dispatch.trainable import resume_source
from searchsvc.spec import parse_spec
from tests.workers.helpers import STRICT_WARNINGS
from workers import newest_resumable, run_trial
from workers.checkpoint import TRAINING_STATE_FILE, WEIGHTS_FILE

pytestmark = STRICT_WARNINGS


@pytest.fixture(scope="module")
def ray_like_trial_folder(tiny_bert: Path, synthetic_tasks: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A 3-epoch trial's checkpoints, copied the way Ray stores them; and its spec."""
    spec = parse_spec({
        "name": "resume", "model": str(tiny_bert), "method": "lora",
        "tasks": [{"name": name, "path": str(path)} for name, path in synthetic_tasks.items()],
        "train": {"max_epochs": 3, "patience": 3, "batch_size": 16, "max_seq_len": 32, "seed": 0},
    })
    trial_folder = tmp_path_factory.mktemp("trial")
    work = tmp_path_factory.mktemp("work")

    def keep(metrics: dict[str, Any], checkpoint: str | None) -> None:
        assert checkpoint is not None
        shutil.copytree(checkpoint, trial_folder / f"checkpoint_{int(metrics['epoch']) - 1:06d}")

    run_trial({"lr": 1e-2}, spec=spec, report=keep, workdir=work)
    return trial_folder, spec


def _fresh_copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "trial"
    shutil.copytree(folder, target)
    return target


def test_the_newest_complete_checkpoint_wins(ray_like_trial_folder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trial = _fresh_copy(ray_like_trial_folder[0], tmp_path)
    folders = sorted(trial.glob("checkpoint_*"))
    assert [f.name for f in folders] == ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]
    assert newest_resumable(reversed(folders)) == folders[2]  # by epoch, not by listing order

    # A copy cut short: the training state is half there.
    state = folders[2] / TRAINING_STATE_FILE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    assert newest_resumable(folders) == folders[1]
    # A copy that had not reached the weights yet.
    (folders[1] / WEIGHTS_FILE).unlink()
    assert newest_resumable(folders) == folders[0]
    assert newest_resumable([trial / "missing"]) is None
    assert newest_resumable([]) is None


def test_a_deleted_record_resumes_from_the_newest_survivor(ray_like_trial_folder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trial = _fresh_copy(ray_like_trial_folder[0], tmp_path)
    recorded = trial / "checkpoint_000001"

    # While Tune's record exists, it is what the trial continues from.
    assert resume_source(tune.Checkpoint.from_directory(str(recorded)), str(tmp_path / "copy")) == str(recorded)
    assert resume_source(None, str(tmp_path / "copy")) is None

    # Retention deleted it just before the crash: the newest complete one beside it is used.
    shutil.rmtree(recorded)
    source = resume_source(tune.Checkpoint.from_directory(str(recorded)), str(tmp_path / "copy"))
    assert source == str(trial / "checkpoint_000002")

    # Nothing usable is left: the trial starts afresh instead of failing every retry.
    for folder in trial.glob("checkpoint_*"):
        (folder / WEIGHTS_FILE).unlink()
    assert resume_source(tune.Checkpoint.from_directory(str(recorded)), str(tmp_path / "copy")) is None


def test_a_trial_continues_from_the_survivor(ray_like_trial_folder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, spec = ray_like_trial_folder
    trial = _fresh_copy(folder, tmp_path)
    shutil.rmtree(trial / "checkpoint_000002")  # an epoch-3 checkpoint would leave nothing to run
    recorded = trial / "checkpoint_000000"
    shutil.rmtree(recorded)
    source = resume_source(tune.Checkpoint.from_directory(str(recorded)), str(tmp_path / "copy"))
    assert source == str(trial / "checkpoint_000001")

    calls: list[dict[str, Any]] = []
    run_trial({"lr": 1e-2}, spec=spec, report=lambda m, c: calls.append(m), workdir=tmp_path / "work", resume_from=source)
    assert [m["epoch"] for m in calls] == [3]
    assert calls[0]["resumed_from_epoch"] == 2


def test_a_restored_trial_whose_recorded_checkpoint_is_gone_is_pointed_at_the_survivor(  # type: ignore[no-untyped-def]
    ray_like_trial_folder, tmp_path: Path
) -> None:
    """Ray's own ``Trainable.restore`` fails on a missing folder before the trainable runs, so
    the driver repairs Tune's record before the trial starts (the reconciler's first step)."""
    import pyarrow.fs
    from ray.train._internal.session import _TrainingResult
    from ray.tune.experiment import Trial as TuneTrial

    from searchsvc.dispatch.reconcile import repoint_missing_checkpoint

    def restored_trial(recorded: Path) -> TuneTrial:
        trial = TuneTrial("__fake", stub=True, checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
        trial.run_metadata.checkpoint_manager.register_checkpoint(_TrainingResult(
            checkpoint=tune.Checkpoint(path=str(recorded), filesystem=pyarrow.fs.LocalFileSystem()), metrics={}))
        return trial

    folder = _fresh_copy(ray_like_trial_folder[0], tmp_path)
    intact = restored_trial(folder / "checkpoint_000001")
    repoint_missing_checkpoint(intact, study_id=1, last_reported_epoch=2)
    assert intact.checkpoint.path == str(folder / "checkpoint_000001")  # there: left alone

    shutil.rmtree(folder / "checkpoint_000001")  # retention deleted epoch 2's; epoch 3's replaced it
    gone = restored_trial(folder / "checkpoint_000001")
    repoint_missing_checkpoint(gone, study_id=1, last_reported_epoch=3)
    assert gone.checkpoint.path == str(folder / "checkpoint_000002")
    # SQL never heard of epoch 3 (killed before its report arrived): resuming from its checkpoint would
    # skip that report for good, so the trial goes back to epoch 1's checkpoint and trains 2 and 3 again
    unheard = restored_trial(folder / "checkpoint_000001")
    repoint_missing_checkpoint(unheard, study_id=1, last_reported_epoch=2)
    assert unheard.checkpoint.path == str(folder / "checkpoint_000000")

    for survivor in folder.glob("checkpoint_*"):
        shutil.rmtree(survivor)
    nothing = restored_trial(folder / "checkpoint_000002")
    repoint_missing_checkpoint(nothing, study_id=1, last_reported_epoch=3)
    assert nothing.checkpoint is None  # starts afresh rather than failing every retry
