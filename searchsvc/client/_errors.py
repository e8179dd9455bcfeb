"""Errors the SDK raises, all under one base so ``except ClientError`` catches every one::

    ClientError                    any failed call
    ├── ServiceUnreachable         no answer from the service: nothing listens at ``url``, or it timed out
    ├── ApiError                   the service answered with an error status (``status``, ``detail``)
    │   ├── Unauthorized           401: no token, or one the service does not know
    │   ├── NotFound               404: no such study/trial/plot, or it is another user's
    │   ├── Conflict               409: the object's state forbids it (e.g. stopping a finished study)
    │   ├── InvalidSpec            422: the spec or request was rejected; ``problems`` lists (field, message)
    │   ├── TooLarge               413: an upload (or a request body) passes the service's size limit
    │   └── ServerError            5xx: the service (or a proxy in front of it) failed
    ├── StudyTimeout               ``Study.wait`` ran out of time (the study keeps running)
    └── NotATaskFolder             a local folder to upload lacks train.jsonl, dev.jsonl or meta.json

Each error's text names what was asked (method and URL) and what went wrong; the CLI adds
the fix (see ``searchsvc.cli_errors``).
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of every error the SDK raises."""


class ServiceUnreachable(ClientError):
    """The service did not answer at ``url`` (connection refused, DNS failure, timeout).

    ``reason`` is the transport's own words (e.g. ``[Errno 111] Connection refused``).
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the searchsvc service at {url}: {reason}")


class ApiError(ClientError):
    """The service answered ``status`` >= 400; ``detail`` is its JSON ``detail`` (or the body's text)."""

    def __init__(self, status: int, detail: Any, *, method: str | None = None, url: str | None = None) -> None:
        self.status = status
        self.detail = detail
        self.method = method
        self.url = url
        where = f" on {method} {url}" if method and url else ""
        super().__init__(f"HTTP {status}{where}: {self._describe(detail)}")

    @staticmethod
    def _describe(detail: Any) -> str:
        if isinstance(detail, list):
            return "; ".join(f"{_loc(d.get('loc'))}: {d.get('msg')}" if isinstance(d, dict) else str(d) for d in detail)
        text = str(detail).strip()
        return text if len(text) <= 300 else text[:300] + " ..."


class Unauthorized(ApiError):
    """401: the request carried no token, or one the service does not know."""


class NotFound(ApiError):
    """404: the object does not exist or belongs to another user (the service never says which)."""


class Conflict(ApiError):
    """409: valid, but the object's current state does not allow it."""


class InvalidSpec(ApiError):
    """422: the spec (or another request field) was rejected; nothing was stored."""

    @property
    def problems(self) -> list[tuple[str, str]]:
        """One ``(field path, message)`` per problem, e.g. ``("search.num_trials", "...")``."""
        if not isinstance(self.detail, list):
            return [("<root>", str(self.detail))]
        return [(_loc(d.get("loc", "")), str(d.get("msg"))) if isinstance(d, dict) else ("<root>", str(d)) for d in self.detail]


class TooLarge(ApiError):
    """413: the upload or request is larger than the service accepts (its operator sets the limits)."""


class NotATaskFolder(ClientError):
    """A folder given to upload is missing, or lacks one of the task files; nothing was sent."""


class ServerError(ApiError):
    """5xx: the service failed (its log says why), or a proxy in front of it did."""


class StudyTimeout(ClientError):
    """``Study.wait(timeout=...)`` ran out of time; the study itself keeps running."""


def _loc(loc: Any) -> str:
    return ".".join(str(p) for p in loc) if isinstance(loc, list | tuple) else str(loc)


def error_for(status: int, detail: Any, *, method: str | None = None, url: str | None = None) -> ApiError:
    """The error type for an HTTP error status."""
    kind: type[ApiError] = {401: Unauthorized, 404: NotFound, 409: Conflict, 413: TooLarge, 422: InvalidSpec}.get(status, ApiError)
    if status >= 500:
        kind = ServerError
    return kind(status, detail, method=method, url=url)
