"""A streaming ``multipart/form-data`` reader: bytes in, parts out, nothing held whole.

The dataset upload route feeds it the request body chunk by chunk as it arrives and
writes each part's bytes to disk at once, so an upload costs a few chunks of memory
whatever its size (Starlette's form parser would need the python-multipart package and
spools every part before the route sees any). It is a push parser: :meth:`feed` returns
the events a chunk completes, ``("begin", Part)``, ``("data", bytes)`` and
``("end", None)``; a delimiter split across chunks is found because the last
``len(delimiter) - 1`` bytes are held back until the next chunk decides them.

Only what a form upload needs (RFC 7578): a part's ``Content-Disposition`` name and file
name; other part headers are read and ignored, and part headers are bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from typing import Literal

MAX_HEADER_BYTES = 16 * 1024
_MAX_BOUNDARY = 70  # RFC 2046

Event = tuple[Literal["begin", "data", "end"], "Part | bytes | None"]


class MultipartError(ValueError):
    """The body is not well-formed multipart (the message quotes none of it)."""


@dataclass(frozen=True)
class Part:
    """A part's form field ``name`` and, for a file, its ``filename`` (either may be empty)."""

    name: str
    filename: str


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, or None if it is another type
    or has no usable boundary."""
    message = Message()
    message["content-type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        return None
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= _MAX_BOUNDARY or not boundary.isascii():
        return None
    return boundary.encode("ascii")


class MultipartReader:
    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"\r\n--" + boundary
        # A leading CRLF lets the first boundary (which has none before it) match the same delimiter.
        self._buffer = bytearray(b"\r\n")
        self._state: Literal["preamble", "boundary", "headers", "body", "done"] = "preamble"

    @property
    def done(self) -> bool:
        """Whether the closing boundary has been read."""
        return self._state == "done"

    def feed(self, chunk: bytes) -> list[Event]:
        """The events ``chunk`` completes. Raises MultipartError on malformed input."""
        if self._state == "done":
            return []  # the epilogue is ignored
        self._buffer += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        """Raises MultipartError if the body ended before its closing boundary."""
        if self._state != "done":
            raise MultipartError("the body ended before the closing multipart boundary")

    def _step(self, events: list[Event]) -> bool:
        """Advance one state if the buffer allows; False when more bytes are needed."""
        buffer, delimiter = self._buffer, self._delimiter
        if self._state == "preamble":
            at = buffer.find(delimiter)
            if at < 0:
                del buffer[: max(0, len(buffer) - len(delimiter) + 1)]  # the preamble is ignored
                return False
            del buffer[: at + len(delimiter)]
            self._state = "boundary"
            return True
        if self._state == "boundary":  # after a delimiter: "--" closes, else (padding) CRLF opens a part
            if len(buffer) < 2:
                return False
            if buffer[:2] == b"--":
                self._state = "done"
                buffer.clear()
                return False
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > 256:
                    raise MultipartError("a multipart boundary line is malformed")
                return False
            if buffer[:end].strip(b" \t"):
                raise MultipartError("a multipart boundary line is malformed")
            del buffer[: end + 2]
            self._state = "headers"
            return True
        if self._state == "headers":
            end = 0 if buffer.startswith(b"\r\n") else buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    raise MultipartError(f"a part's headers are longer than {MAX_HEADER_BYTES} bytes")
                return False
            head = bytes(buffer[:end])
            del buffer[: end + (2 if end == 0 else 4)]
            events.append(("begin", _part_of(head)))
            self._state = "body"
            return True
        if self._state == "body":
            at = buffer.find(delimiter)
            if at < 0:
                ready = len(buffer) - (len(delimiter) - 1)  # the rest may start a delimiter
                if ready > 0:
                    events.append(("data", bytes(buffer[:ready])))
                    del buffer[:ready]
                return False
            if at:
                events.append(("data", bytes(buffer[:at])))
            del buffer[: at + len(delimiter)]
            events.append(("end", None))
            self._state = "boundary"
            return True
        return False


def _part_of(head: bytes) -> Part:
    message = Message()
    for line in head.decode("utf-8", errors="replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if not sep:
            raise MultipartError("a part header is malformed")
        message[key.strip()] = value.strip()
    if message.get("content-disposition") is None:
        raise MultipartError("a part has no Content-Disposition header")
    name = message.get_param("name", header="content-disposition")
    filename = message.get_param("filename", header="content-disposition")
    return Part(name=name if isinstance(name, str) else "", filename=filename if isinstance(filename, str) else "")
