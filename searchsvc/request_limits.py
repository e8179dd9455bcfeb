"""Bounds on raw request data, checked before it is parsed into our types.

A study spec arrives from anyone holding a token. Before pydantic looks at it, the whole
value must be a JSON object of bounded shape: no NUL characters (PostgreSQL refuses them
in text, SQLite stores them, and neither is ever meant), no string longer than
``MAX_STRING`` characters, nesting at most ``MAX_DEPTH`` deep and at most ``MAX_NODES``
values in all. Field-specific limits (a name's length, a path's) live on the spec.
"""

from __future__ import annotations

from typing import Any

from searchsvc.errors import SpecError

MAX_STRING = 10_000
MAX_DEPTH = 16
MAX_NODES = 20_000


def check_raw_spec(data: Any) -> None:
    """Raises SpecError naming the field of each problem (at most a few; the rest are
    implied). A string spec is refused: YAML is read on the client side (SDK, CLI)."""
    if not isinstance(data, dict):
        kind = "text" if isinstance(data, str) else type(data).__name__
        raise SpecError([("<root>", f"a study spec must be a JSON object, got {kind} (the SDK and CLI read YAML files)")])
    problems: list[tuple[str, str]] = []
    count = 0
    stack: list[tuple[str, Any, int]] = [("", data, 1)]
    while stack and len(problems) < 5:
        path, value, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            problems.append(("<root>", f"more than {MAX_NODES} values"))
            break
        if isinstance(value, str):
            problems.extend(_string_problems(path, value))
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                problems.append((path or "<root>", f"nested more than {MAX_DEPTH} levels deep"))
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                key_text = str(key)[:64]  # a field path stays short in messages
                if isinstance(key, str) and (key_problems := _string_problems(path or "<root>", key, what="a key")):
                    problems.extend(key_problems)
                    continue
                stack.append((f"{path}.{key_text}" if path else key_text, child, depth + 1))
    if problems:
        raise SpecError(problems)


def _string_problems(path: str, value: str, *, what: str = "the value") -> list[tuple[str, str]]:
    where = path or "<root>"
    if "\x00" in value:
        return [(where, f"{what} contains a NUL character")]
    if len(value) > MAX_STRING:
        return [(where, f"{what} is longer than {MAX_STRING} characters")]
    return []
