"""Where a study spec may point on the server's filesystem.

A spec names task folders and a base model; on a shared server those strings are paths
into the server's filesystem, read with the server's rights. :class:`PathPolicy` decides,
before anything is read, whether a path is one the operator allows:

- it must lie under one of the operator's roots (``SEARCHSVC_ALLOWED_PATHS``, empty by
  default, so nothing is allowed until the operator says so; a root may be per user,
  ``/srv/data/{user}``), after resolving ``~``,
  ``..`` and every symlink: a link inside a root that points out of it is refused;
- it must not lie inside the service's own data folder (other users' checkpoints and
  artifacts live there), except a base model inside an exported artifact of the user's
  own studies;
- a refusal reads the same whether or not the path exists, and never repeats the path,
  so the error cannot be used to map the server's files.

A ``model`` that is not a path (no leading ``/``, ``~`` or ``.``) and not one of the
operator's registered models (:mod:`searchsvc.model_registry`, which asks this module only
after its own ids) is a model-hub id; it is accepted only when the operator enables hub
downloads.

The policy is applied on the server only (the SDK validates specs locally without it);
:func:`searchsvc.spec.parse_spec` calls it before checking that a folder exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REFUSED = "not under a folder this service allows (the operator sets SEARCHSVC_ALLOWED_PATHS)"
HUB_REFUSED = ("not a model this service offers (GET /v1/models lists them) nor a path under an allowed folder, "
               "and this service does not download models from a hub")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95})?$")
USER_PLACEHOLDER = "{user}"
_SAFE_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,99}$")


def parse_roots(text: str) -> list[Path]:
    """``SEARCHSVC_ALLOWED_PATHS``: folders separated by ``os.pathsep``; blanks ignored.

    A root may hold ``{user}`` (``/srv/data/{user}``): each user is then allowed only
    their own folder, so one user's task folders are out of another's reach."""
    return [Path(part.strip()).expanduser() for part in text.split(os.pathsep) if part.strip()]


def roots_for(roots: Iterable[Path], user_name: str) -> list[Path]:
    """``roots`` with ``{user}`` replaced by ``user_name``; such roots are dropped for a
    name that could step out of its folder (``..``, ``/``) or is otherwise unusual."""
    safe = bool(_SAFE_USER.match(user_name)) and ".." not in user_name
    out = []
    for root in roots:
        text = str(root)
        if USER_PLACEHOLDER not in text:
            out.append(root)
        elif safe:
            out.append(Path(text.replace(USER_PLACEHOLDER, user_name)))
    return out


def looks_like_path(value: str) -> bool:
    """Whether a ``model`` string names a filesystem path rather than a hub id."""
    return value.startswith(("/", "~", ".")) or "\\" in value


def _real(path: Path) -> Path:
    """``path`` with ``~``, ``..`` and symlinks resolved (whether or not it exists)."""
    return Path(os.path.realpath(path.expanduser()))


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


@dataclass(frozen=True)
class PathPolicy:
    """The operator's rules for one user's spec (see the module docstring).

    ``roots``: allowed folders; ``private``: folders refused even under a root (the data
    folder, the datasets' root); ``owned``: folders inside ``private`` this user may use as
    a base model (their own exported artifacts); ``datasets``: task folders inside
    ``private`` this spec may name (the user's datasets the service resolved, exactly
    those folders); ``allow_hub``: accept hub ids for ``model``.
    """

    roots: Sequence[Path] = ()
    private: Sequence[Path] = ()
    owned: Sequence[Path] = ()
    datasets: Sequence[Path] = ()
    allow_hub: bool = False
    _real_roots: tuple[Path, ...] = field(init=False, repr=False)
    _real_private: tuple[Path, ...] = field(init=False, repr=False)
    _real_owned: tuple[Path, ...] = field(init=False, repr=False)
    _real_datasets: tuple[Path, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_real_roots", tuple(_real(p) for p in self.roots))
        object.__setattr__(self, "_real_private", tuple(_real(p) for p in self.private))
        object.__setattr__(self, "_real_owned", tuple(_real(p) for p in self.owned))
        object.__setattr__(self, "_real_datasets", tuple(_real(p) for p in self.datasets))

    def task_folder(self, value: str) -> Path:
        """The resolved folder; ValueError (the same text for every refusal) if not allowed."""
        if value.startswith("/") and "\x00" not in value and _real(Path(value)) in self._real_datasets:
            return _real(Path(value))
        path = self._confined(value)
        if path is None:
            raise ValueError(REFUSED)
        return path

    def model(self, value: str) -> str:
        """The resolved model folder, or the hub id as given; ValueError if not allowed."""
        if not looks_like_path(value):
            if self.allow_hub and _HUB_ID.match(value) and ".." not in value:
                return value
            raise ValueError(HUB_REFUSED)
        if value.startswith(("/", "~")) and "\x00" not in value and _under(_real(Path(value)), self._real_owned):
            return str(_real(Path(value)))
        path = self._confined(value)
        if path is None:
            raise ValueError(REFUSED)
        return str(path)

    def _confined(self, value: str) -> Path | None:
        if "\x00" in value or not value.startswith(("/", "~")):
            return None  # relative paths would depend on the server's working directory
        path = _real(Path(value))
        if not _under(path, self._real_roots) or _under(path, self._real_private):
            return None
        return path
