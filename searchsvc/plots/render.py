"""Render one plot of a study to bytes: validate the request, read SQL, draw, encode.

Synchronous and CPU-bound (tens of milliseconds to a second): the API calls it from a
plain ``def`` route, which FastAPI runs in its thread pool, so the event loop keeps serving.
"""

from __future__ import annotations

import io

from searchsvc.errors import SpecError
from searchsvc.plots.data import load_study_data
from searchsvc.plots.kinds import DPI, FORMATS, PLOT_KINDS, SIZES, known_kinds
from searchsvc.store import Store


def check_request(kind: str, fmt: str) -> None:
    """Raises SpecError naming the field for an unknown kind or format."""
    problems = []
    if kind not in PLOT_KINDS:
        problems.append(("kind", f"unknown plot kind {kind!r}; known: {known_kinds()}"))
    if fmt not in FORMATS:
        problems.append(("format", f"unknown format {fmt!r}; known: {', '.join(FORMATS)}"))
    if problems:
        raise SpecError(problems)


def render_study_plot(store: Store, study_id: int, kind: str, *, owner_id: int | None, trial: int | None = None,
                      fmt: str = "png") -> bytes:
    """The plot as PNG or SVG bytes, drawn from what the store holds now.

    Raises SpecError (unknown kind or format), NotFoundError (no such study for this owner,
    or no such trial number), RuntimeError (matplotlib missing on the server).
    """
    data = load_study_data(store, study_id, owner_id=owner_id)  # first: another user's study is 404 whatever the kind
    check_request(kind, fmt)
    try:
        from matplotlib.figure import Figure

        from searchsvc.plots.draw import draw
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency; this names the fix if it was left out
        raise RuntimeError("plots need matplotlib on the server: pip install 'matplotlib>=3.8'") from exc
    width, height = SIZES[kind]
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    draw(kind, fig, data, trial)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=DPI, metadata={"Software": None} if fmt == "png" else None)
    return buffer.getvalue()
