"""Request bodies: JSON only (415 otherwise) and at most ``max_bytes`` (413 otherwise).

A plain ASGI middleware, so the limits hold before FastAPI reads or parses anything: a
declared ``Content-Length`` over the limit is refused at once, and a chunked body is
counted as it arrives and refused as soon as it passes the limit (never held whole).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class BodyLimits:
    """``streamed``: paths whose route reads its own (non-JSON) body as a stream under
    limits of its own (the dataset upload); their bodies pass through untouched."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, streamed: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY or scope["path"] in self.streamed:
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _reply(send, 413, f"the request body is larger than {self.max_bytes} bytes")
            return
        if length not in (None, "0") and not _is_json(headers.get("content-type", "")):
            await _reply(send, 415, "request bodies must be JSON (Content-Type: application/json)")
            return
        chunks: list[bytes] = []
        size = 0
        while True:  # read the body here, counting, so nothing downstream sees more than the limit
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _reply(send, 413, f"the request body is larger than {self.max_bytes} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if size and not _is_json(headers.get("content-type", "")):
            await _reply(send, 415, "request bodies must be JSON (Content-Type: application/json)")
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send: Send, status: int, detail: str) -> None:
    payload: dict[str, Any] = {"detail": detail}
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
