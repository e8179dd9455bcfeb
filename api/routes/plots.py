"""Plots of a study under /v1/studies/{id}/plots. Owner only: another user's study is 404.

A plain ``def`` route: FastAPI runs it in its thread pool, so drawing (CPU-bound, up to
about a second) never blocks the event loop that serves everyone else.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from api.deps import CurrentUser, ServiceDep
from api.schemas import error_responses
from searchsvc.plots import FORMATS, PER_TRIAL_KINDS, PLOT_KINDS, render_study_plot

router = APIRouter(prefix="/v1/studies", tags=["plots"], responses=error_responses(401, 404, 413, 415, 422, 503))

_KINDS_DOC = "; ".join(f"`{name}`: {text}" for name, text in PLOT_KINDS.items())


@router.get(
    "/{study_id}/plots/{kind}",
    response_class=Response,
    responses={200: {"content": {media: {} for media in FORMATS.values()}, "description": "the plot"}},
    description=f"One plot of the study, drawn from what SQL holds now (works while it runs). Kinds: {_KINDS_DOC}.",
)
def study_plot(
    study_id: int,
    kind: Annotated[str, Path(description=f"one of: {', '.join(PLOT_KINDS)}")],
    user: CurrentUser,
    service: ServiceDep,
    trial: Annotated[int | None, Query(ge=0, description=f"trial number for {', '.join(sorted(PER_TRIAL_KINDS))} "
                                                         "(default: the best so far)")] = None,
    format: Annotated[str, Query(description="png or svg")] = "png",
) -> Response:
    content = render_study_plot(service.store, study_id, kind, owner_id=user.id, trial=trial, fmt=format)
    return Response(content, media_type=FORMATS[format], headers={"Cache-Control": "no-store"})
