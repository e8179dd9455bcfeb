"""Injected dependencies: the service and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from searchsvc.service import StudyService
from searchsvc.store import User

_bearer = HTTPBearer(auto_error=False, description="an API token from `searchsvc token create --user NAME`")


def get_service(request: Request) -> StudyService:
    return request.app.state.service  # type: ignore[no-any-return]


def get_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> User:
    """Raises AuthError (401) for a missing or unknown token."""
    token = credentials.credentials if credentials else None
    return request.app.state.service.store.authenticate(token)  # type: ignore[no-any-return]


ServiceDep = Annotated[StudyService, Depends(get_service)]
CurrentUser = Annotated[User, Depends(get_user)]
