"""Errors the SDK raises::

    ClientError                    any failed call
    ├── ApiError                   the server answered with an error status
    │   ├── Unauthorized           401: missing or bad token
    │   ├── NotFound               404: no such study/trial (or not yours)
    │   ├── Conflict               409: e.g. stopping a finished study
    │   └── InvalidSpec            422: the spec was rejected; ``problems`` lists (field, message)
    └── StudyTimeout               ``wait`` ran out of time
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    pass


class ApiError(ClientError):
    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"HTTP {status}: {self._describe(detail)}")

    @staticmethod
    def _describe(detail: Any) -> str:
        if isinstance(detail, list):
            return "; ".join(f"{d.get('loc')}: {d.get('msg')}" if isinstance(d, dict) else str(d) for d in detail)
        return str(detail)


class Unauthorized(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class InvalidSpec(ApiError):
    @property
    def problems(self) -> list[tuple[str, str]]:
        if not isinstance(self.detail, list):
            return [("<root>", str(self.detail))]
        out = []
        for d in self.detail:
            loc = d.get("loc", "")
            out.append((".".join(str(p) for p in loc) if isinstance(loc, list) else str(loc), str(d.get("msg"))))
        return out


class StudyTimeout(ClientError):
    pass


def error_for(status: int, detail: Any) -> ApiError:
    kind = {401: Unauthorized, 404: NotFound, 409: Conflict, 422: InvalidSpec}.get(status, ApiError)
    return kind(status, detail)
