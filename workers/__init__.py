"""Trainers for searchsvc: data, PEFT methods, metrics, the trial entry point, export.

The dispatcher imports two names from here: :func:`run_trial`, and
:func:`newest_resumable` to pick the checkpoint a resumed trial continues from. The service
checks an uploaded task folder with :func:`check_task_folder` (the checks a trial makes
when it loads the folder, so an upload that passes is one every trial can read). Users of a finished
study call :func:`export_artifact` (checkpoint -> artifact directory) and :func:`load`
(artifact directory -> :class:`workers.artifact.Predictor`). Importing this package is
cheap (no torch, no transformers): the heavy modules load on the first call, so a Ray
driver or a CLI that only checks the entry point exists does not pay for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from searchsvc.spec import StudySpec
    from workers.artifact import Predictor
    from workers.data import FolderCheck

__all__ = ["check_task_folder", "export_artifact", "load", "newest_resumable", "resumable_beside", "run_trial"]


def run_trial(
    config: dict[str, Any],
    *,
    spec: StudySpec,
    report: Callable[[dict[str, Any], str | None], None],
    workdir: str | Path,
    resume_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one trial (continuing from the checkpoint ``resume_from``, if
    given); see :func:`workers.trial.run_trial`."""
    from workers.trial import run_trial as _run_trial

    return _run_trial(config, spec=spec, report=report, workdir=workdir, resume_from=resume_from)


def newest_resumable(directories: Iterable[str | Path], *, max_epoch: int | None = None) -> Path | None:
    """The newest complete checkpoint among ``directories``; see
    :func:`workers.checkpoint.newest_resumable`."""
    from workers.checkpoint import newest_resumable as _newest

    return _newest(directories, max_epoch=max_epoch)


def resumable_beside(recorded: str | Path, *, max_epoch: int | None = None) -> Path | None:
    """The newest complete checkpoint beside a recorded one; see
    :func:`workers.checkpoint.resumable_beside`."""
    from workers.checkpoint import resumable_beside as _beside

    return _beside(recorded, max_epoch=max_epoch)


def export_artifact(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Turn a trial checkpoint into an artifact directory; see :func:`workers.export.export_artifact`."""
    from workers.export import export_artifact as _export

    return _export(checkpoint_dir, out_dir)


def load(path: str | Path, *, device: str = "cpu") -> Predictor:
    """Load an exported artifact as a predictor for every task; see :func:`workers.artifact.load`."""
    from workers.artifact import load as _load

    return _load(path, device=device)


def check_task_folder(folder: str | Path) -> FolderCheck:
    """Check every row of a task folder as a trial would read it; returns its row counts.
    Raises ValueError naming the file and line; see :func:`workers.data.check_task_folder`."""
    from workers.data import check_task_folder as _check

    return _check(Path(folder))
