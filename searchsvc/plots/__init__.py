"""Plots of a study, drawn from SQL while it runs (matplotlib, Agg; PNG or SVG).

    from searchsvc.plots import render_study_plot, PLOT_KINDS
    png = render_study_plot(store, study_id, "history", owner_id=user.id)

``kinds`` (names, sizes) imports nothing heavy; drawing imports matplotlib on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from searchsvc.plots.kinds import FORMATS, PER_TRIAL_KINDS, PLOT_KINDS, SIZES

if TYPE_CHECKING:
    from searchsvc.store import Store

__all__ = ["FORMATS", "PER_TRIAL_KINDS", "PLOT_KINDS", "SIZES", "render_study_plot"]


def render_study_plot(store: Store, study_id: int, kind: str, **kwargs: Any) -> bytes:
    """See :func:`searchsvc.plots.render.render_study_plot`."""
    from searchsvc.plots.render import render_study_plot as render

    return render(store, study_id, kind, **kwargs)
