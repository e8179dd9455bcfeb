"""What the CLI says when a command fails: a few lines naming the cause and the fix, and an exit code per kind.

A user who mistyped a URL or forgot a token needs one sentence, not an httpx traceback;
scripts need to tell the kinds apart without parsing text, hence one exit code per kind.
``--debug`` (or ``SEARCHSVC_DEBUG=1``) adds the traceback for the rare case that is a bug.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from searchsvc.client import (
    ApiError,
    ClientError,
    Conflict,
    InvalidSpec,
    NotATaskFolder,
    NotFound,
    ServerError,
    ServiceUnreachable,
    StudyTimeout,
    TooLarge,
    Unauthorized,
)

# Exit codes, one per kind of failure (documented in ``searchsvc --help`` and the README).
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran but what it followed failed (a study that did not complete), or an unexpected error
EXIT_INVALID = 2  # bad input: a rejected spec or request (422), a missing spec file, bad flags
EXIT_UNREACHABLE = 3  # no answer from the service
EXIT_UNAUTHORIZED = 4  # 401: no token or an unknown one
EXIT_NOT_FOUND = 5  # 404
EXIT_CONFLICT = 6  # 409
EXIT_SERVER = 7  # 5xx, or any other unexpected HTTP status
EXIT_TIMEOUT = 8  # waited longer than asked

EXIT_CODES_HELP = """exit codes:
  0  success
  1  a followed study did not complete, or an unexpected error
  2  invalid spec or input (HTTP 422, a missing file, bad flags)
  3  the service cannot be reached (check --url / SEARCHSVC_URL)
  4  token missing or refused (HTTP 401; `searchsvc token create --user NAME`)
  5  not found (HTTP 404): no such study, or another user's
  6  conflict (HTTP 409): the study's state does not allow it
  7  the service failed (HTTP 5xx)
  8  timed out waiting
add --debug (or SEARCHSVC_DEBUG=1) to any command for the full traceback"""

TOKEN_FIX = "create one with `searchsvc token create --user NAME` (on the server's machine) and export it as SEARCHSVC_TOKEN, or pass --token"


@dataclass(frozen=True)
class Explained:
    """What to print (each line goes to stderr) and the exit code."""

    code: int
    lines: list[str]


def explain(exc: BaseException, *, has_token: bool = True) -> Explained:
    """The message and exit code for an error a CLI command raised."""
    if isinstance(exc, ClientError):
        return _explain_client(exc, has_token=has_token)
    if isinstance(exc, FileNotFoundError):
        return Explained(EXIT_INVALID, [f"error: no such file: {exc.filename or exc}", "  fix: check the path (relative paths start from your working directory)"])
    if isinstance(exc, KeyboardInterrupt):
        return Explained(130, ["interrupted (a submitted study keeps running on the service; `searchsvc study stop ID` stops it)"])
    return Explained(EXIT_FAILED, [f"error: unexpected {type(exc).__name__}: {exc}", "  rerun with --debug for the traceback, and report it if it looks like a bug"])


def _explain_client(exc: ClientError, *, has_token: bool) -> Explained:
    if isinstance(exc, ServiceUnreachable):
        current = os.environ.get("SEARCHSVC_URL") or "unset"
        return Explained(EXIT_UNREACHABLE, [
            f"error: cannot reach the searchsvc service at {exc.url} ({exc.reason})",
            f"  fix: start it with `searchsvc serve`, or point the CLI at the running one with --url URL or SEARCHSVC_URL (now {current})",
        ])
    if isinstance(exc, StudyTimeout):
        return Explained(EXIT_TIMEOUT, [f"error: {exc}", "  the study keeps running; `searchsvc study watch ID` follows it again"])
    if isinstance(exc, NotATaskFolder):
        return Explained(EXIT_INVALID, [f"error: {exc}",
                                        "  fix: a task folder holds train.jsonl, dev.jsonl and meta.json"])
    assert isinstance(exc, ApiError)
    where = _where(exc)
    detail = ApiError._describe(exc.detail)
    if isinstance(exc, Unauthorized):
        if not has_token:
            return Explained(EXIT_UNAUTHORIZED, [f"error: no API token was given ({where} answered HTTP 401)", f"  fix: {TOKEN_FIX}"])
        return Explained(EXIT_UNAUTHORIZED, [
            f"error: the service refused the token (HTTP 401 from {where}: {detail})",
            "  the token may belong to another server or database, or was revoked",
            f"  fix: {TOKEN_FIX}",
        ])
    if isinstance(exc, NotFound):
        kind = "datasets" if "/v1/datasets" in (exc.url or "") else "studies"
        command = "data" if kind == "datasets" else "study"
        return Explained(EXIT_NOT_FOUND, [
            f"error: not found (HTTP 404 from {where}): {detail}",
            f"  fix: `searchsvc {command} list` shows the {kind} your token can see (other users' {kind} are invisible)",
        ])
    if isinstance(exc, TooLarge):
        return Explained(EXIT_INVALID, [f"error: too large (HTTP 413 from {where}): {detail}",
                                        "  fix: send less (the service's operator sets its size limits)"])
    if isinstance(exc, Conflict):
        return Explained(EXIT_CONFLICT, [f"error: refused (HTTP 409 from {where}): {detail}",
                                         "  `searchsvc study show ID` shows the study's state"])
    if isinstance(exc, InvalidSpec):
        problems = exc.problems
        what = "the spec was rejected" if exc.method == "POST" and (exc.url or "").endswith("/v1/studies") else "rejected"
        return Explained(EXIT_INVALID, [
            f"error: {what} (HTTP 422 from {where}), {len(problems)} problem(s):",
            *(f"  {path}: {message}" for path, message in problems),
            "  fix: correct those fields (the README's 'Study spec' section lists them) and submit again",
        ])
    if isinstance(exc, ServerError):
        return Explained(EXIT_SERVER, [
            f"error: the service failed (HTTP {exc.status} from {where}): {detail}",
            "  fix: the server's own log says why (the output of `searchsvc serve`); retry, and report it if it repeats",
        ])
    return Explained(EXIT_SERVER, [f"error: unexpected answer (HTTP {exc.status} from {where}): {detail}"])


def _where(exc: ApiError) -> str:
    return f"{exc.method} {exc.url}" if exc.method and exc.url else "the service"
