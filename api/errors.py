"""The one place where errors become HTTP responses.

Every error body has the same shape, ``{"detail": ..., "error_id"?: ...}``: ``detail``
is a short message, or for 422 a list of ``{"loc", "msg"}`` problems. Nothing internal
goes out: a database failure (503) or a bug (500) answers a fixed message and an
``error_id`` that finds the full text in the server's log; a 422 never echoes the input.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from searchsvc.errors import AuthError, ConflictError, NotFoundError, SearchsvcError, SpecError, StoreError, TooLargeError

log = logging.getLogger("searchsvc.api")
_MAX_TEXT = 300  # a message or a field path in a reply never grows with the request

_STATUS: list[tuple[type[SearchsvcError], int]] = [
    (SpecError, 422),
    (NotFoundError, 404),
    (AuthError, 401),
    (ConflictError, 409),
    (TooLargeError, 413),
    (StoreError, 503),
]


def short(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def error_body(detail: object, *, error_id: str | None = None) -> dict[str, object]:
    return {"detail": detail, **({"error_id": error_id} if error_id else {})}


def _logged(exc: BaseException, what: str) -> str:
    """Log ``exc`` in full under a new error id and return the id (the reply carries it)."""
    error_id = uuid.uuid4().hex[:12]
    log.error("%s (error id %s)", what, error_id, exc_info=exc)
    return error_id


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SearchsvcError)
    async def _handle(_request: Request, exc: SearchsvcError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, SpecError):
            body = error_body([{"loc": short(path), "msg": short(message)} for path, message in exc.problems])
        elif isinstance(exc, StoreError):
            body = error_body("the database is unavailable; try again", error_id=_logged(exc, "database error"))
        elif status == 500:
            body = error_body("internal error", error_id=_logged(exc, "unexpected searchsvc error"))
        else:
            body = error_body(short(str(exc)))
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 (a path id that is not an integer, a body that is not JSON)
        # quotes the input back; ours names the field only, in the same shape as SpecError's.
        problems = [
            {"loc": short(".".join(str(part) for part in error.get("loc", ())) or "<root>"),
             "msg": short(str(error.get("msg", "")))}
            for error in exc.errors()[:20]
        ]
        return JSONResponse(error_body(problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body that is not JSON at all with a bare 400; it is an invalid
        # request like any other, so it gets the 422 every invalid body gets.
        if exc.status_code == 400:
            return JSONResponse(error_body([{"loc": "body", "msg": "not valid JSON"}]), status_code=422)
        return JSONResponse(error_body(short(str(exc.detail))), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("internal error", error_id=_logged(exc, "unhandled error")), status_code=500)
