"""The one place where our errors become HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from searchsvc.errors import AuthError, ConflictError, NotFoundError, SearchsvcError, SpecError, StoreError

_STATUS: list[tuple[type[SearchsvcError], int]] = [
    (SpecError, 422),
    (NotFoundError, 404),
    (AuthError, 401),
    (ConflictError, 409),
    (StoreError, 503),
]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SearchsvcError)
    async def _handle(_request: Request, exc: SearchsvcError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
        if isinstance(exc, SpecError):
            detail: object = [{"loc": path, "msg": message} for path, message in exc.problems]
        else:
            detail = str(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)
