"""SIGTERM means "shut down gracefully", as Ctrl-C does.

``docker stop`` and Kubernetes send SIGTERM. Ray's driver (``ray.init``) installs its own
SIGTERM handler, which prints a C++ stack and ends the process at once, skipping our
graceful shutdown (pause the running studies so the next start resumes them). The
serve process keeps the handler it had (uvicorn's: a graceful shutdown), and a study
runner turns SIGTERM into the SIGINT Tune already handles by saving its state.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def keep_sigterm_handler() -> Iterator[None]:
    """Whatever the block installs for SIGTERM is replaced by the handler from before it."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def sigterm_as_interrupt() -> None:
    """From now on SIGTERM does what SIGINT (Ctrl-C) does at that moment."""

    def _interrupt(_signum: int, _frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, _interrupt)


@contextmanager
def shutdown_signals_end_quietly() -> Iterator[None]:
    """For ``uvicorn.run``: it handles SIGINT and SIGTERM itself (a graceful shutdown),
    then re-raises the signal it caught into the handlers from before it started. With
    the defaults there, SIGTERM would kill the process after its clean shutdown (exit
    143) and SIGINT would raise KeyboardInterrupt; inside this block both are noted and
    ignored, so the shutdown ends with a normal return."""
    handled = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.getsignal(sig) for sig in handled}
    for sig in handled:
        signal.signal(sig, lambda _signum, _frame: None)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
