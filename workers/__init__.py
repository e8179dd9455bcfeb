"""Trainers for searchsvc: data, PEFT methods, metrics and the trial entry point.

The dispatcher imports exactly one name from here, :func:`run_trial`. Importing this
package is cheap (no torch, no transformers): the heavy modules load on the first call,
so a Ray driver or a CLI that only checks the entry point exists does not pay for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from searchsvc.spec import StudySpec

__all__ = ["run_trial"]


def run_trial(
    config: dict[str, Any],
    *,
    spec: StudySpec,
    report: Callable[[dict[str, float], str | None], None],
    workdir: str | Path,
) -> dict[str, float]:
    """Train and evaluate one trial; see :func:`workers.trial.run_trial`."""
    from workers.trial import run_trial as _run_trial

    return _run_trial(config, spec=spec, report=report, workdir=workdir)
