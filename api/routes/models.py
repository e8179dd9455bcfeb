"""The operator's model registry under /v1/models: what a spec's ``model`` may name."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentUser, ServiceDep
from api.schemas import ListOut, ModelOut, error_responses

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(401, 503))


@router.get("", response_model=ListOut[ModelOut])
def list_models(user: CurrentUser, service: ServiceDep) -> ListOut[ModelOut]:
    """The models this service offers, by id (a spec's `model`); besides these a spec may
    name `study:<id>`, one of your studies' exported models."""
    found = service.list_models(user)
    return ListOut(data=[ModelOut.of(m) for m in found], count=len(found))
