"""A study's artifact as one .tar.gz, packed once and atomically.

The runner packs the exported artifact when the study ends (before recording where it
is), so a download only sends a finished file; a checkpoint downloaded before the study
ends is packed on the first request. Either way concurrent requests share one build: a
lock per target within a process, a unique temporary file renamed into place across
processes (a reader sees no tarball or a whole one, never half of one).
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import threading
from pathlib import Path


def artifact_name(study_id: int) -> str:
    """The download's name (without ``.tar.gz``) and the folder name inside it."""
    return f"study-{study_id}-artifact"


_TARBALL_LOCKS: dict[Path, threading.Lock] = {}
_TARBALL_LOCKS_GUARD = threading.Lock()


def pack_once(folder: Path, *, name: str) -> Path:
    """``folder`` packed as ``<folder>.<name>.tar.gz`` beside it (its contents under
    ``name/``); built again only when the folder changed since."""
    target = folder.parent / f"{folder.name}.{name}.tar.gz"
    with _TARBALL_LOCKS_GUARD:
        lock = _TARBALL_LOCKS.setdefault(target, threading.Lock())
    with lock:
        if target.is_file() and target.stat().st_mtime >= folder.stat().st_mtime:
            return target
        fd, partial = tempfile.mkstemp(dir=folder.parent, prefix=f".{target.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                tar.add(folder, arcname=name)
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return target
