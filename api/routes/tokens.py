"""A user's API tokens under /v1/tokens: list, create, revoke. Thin, like the study routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from api.deps import CurrentUser
from api.schemas import ListOut, TokenCreatedOut, TokenIn, TokenOut, error_responses
from searchsvc.tokens import TokenService

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=error_responses(401, 404, 413, 415, 422, 503))


def get_tokens(request: Request) -> TokenService:
    return TokenService(request.app.state.service.store)


TokensDep = Annotated[TokenService, Depends(get_tokens)]


@router.get("", response_model=ListOut[TokenOut])
def list_tokens(user: CurrentUser, tokens: TokensDep) -> ListOut[TokenOut]:
    """Your tokens (never their secrets), expired ones included until revoked."""
    found = tokens.list(user)
    return ListOut(data=[TokenOut.of(t) for t in found], count=len(found))


@router.post("", status_code=201, response_model=TokenCreatedOut)
def create_token(user: CurrentUser, tokens: TokensDep, body: TokenIn | None = None) -> TokenCreatedOut:
    """A new token for you; ``token`` is shown in this answer only."""
    body = body or TokenIn()
    token, secret = tokens.create(user, label=body.label, expires_in_days=body.expires_in_days)
    return TokenCreatedOut(**TokenOut.of(token).model_dump(), token=secret)


@router.delete("/{token_id}", status_code=204, response_class=Response)
def revoke_token(token_id: int, user: CurrentUser, tokens: TokensDep) -> Response:
    """Revoke one of your tokens at once (the one in use included)."""
    tokens.revoke(user, token_id)
    return Response(status_code=204)
