"""Reading the end of a log file, for error messages that show what a process said last."""

from __future__ import annotations

from pathlib import Path


def file_tail(path: Path, limit: int = 8000) -> str:
    """The last ``limit`` characters of a text file, or "" if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return ""
