"""The error tree of searchsvc.

Every error the library raises on purpose derives from :class:`SearchsvcError`, and each
one also derives from the builtin a caller would naturally catch, so code that knows
nothing of searchsvc still handles it sensibly::

    SearchsvcError
    ├── SpecError(ValueError)          a study spec or a request is invalid; names the field path
    ├── NotFoundError(KeyError)        no such study / trial / token visible to this user
    ├── AuthError(PermissionError)     missing or unknown credentials
    ├── ConflictError(RuntimeError)    the request clashes with the object's state
    ├── TooLargeError(ValueError)      an upload passes one of the operator's size limits
    └── StoreError(RuntimeError)       the database failed; the operation was rolled back
        └── StoreUnavailableError      the database cannot be reached (or is busy): retry later

The API maps these to HTTP status codes in exactly one place (``api/errors.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence


class SearchsvcError(Exception):
    """Base of every error searchsvc raises on purpose."""


class SpecError(SearchsvcError, ValueError):
    """A study spec (or request body) is invalid.

    ``problems`` holds one ``(field_path, message)`` pair per problem, so callers can
    show every problem at once instead of making the user fix them one by one.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems: list[tuple[str, str]] = list(problems)
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in self.problems))


class NotFoundError(SearchsvcError, KeyError):
    """The object does not exist, or belongs to another user (we never say which)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else "not found"


class AuthError(SearchsvcError, PermissionError):
    """No credentials, or credentials that match no user."""


class ConflictError(SearchsvcError, RuntimeError):
    """The request is valid but the object's current state does not allow it."""


class TooLargeError(SearchsvcError, ValueError):
    """An upload is larger than a limit the operator set (a file's, or the whole upload's)."""


class StoreError(SearchsvcError, RuntimeError):
    """The database failed; the transaction was rolled back and nothing was written."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached right now (down, restarting, connections cut, or
    busy): nothing was written, and the same call may succeed when it is back."""


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b")


def summarize(text: str, *, limit: int = 300) -> str:
    """One line for a user from an error text (a traceback, a Ray error with log tails):
    the last line that names an exception (``ValueError: ...``), else the last line, cut
    to ``limit`` characters. The full text, with install paths and log tails, stays in
    the server's logs and the database."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    named = [line for line in lines if _EXCEPTION_LINE.match(line)]
    line = (named or lines or [""])[-1]
    return line if len(line) <= limit else line[: limit - 1] + "…"
