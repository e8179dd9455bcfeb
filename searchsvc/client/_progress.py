"""A live progress line for waiting on a study: trials done of total, best so far."""

from __future__ import annotations

import sys
from typing import Any


class StudyProgressBar:
    """tqdm when available (a real bar), else a single rewritten line on stderr."""

    def __init__(self, name: str, total: int) -> None:
        self.name = name
        try:
            from tqdm import tqdm

            self._bar: Any = tqdm(total=total, desc=name, unit="trial", dynamic_ncols=True, file=sys.stderr)
        except ImportError:  # the SDK does not require tqdm
            self._bar = None
        self._last = ""

    def update(self, study: dict[str, Any]) -> None:
        p = study["progress"]
        done = p["completed"] + p["failed"] + p["stopped"]
        best = p["best_objective"]
        best_text = "-" if best is None else f"{best:.4f}"
        postfix = f"state={study['state']} running={p['running']} failed={p['failed']} best={best_text}"
        if self._bar is not None:
            self._bar.total = p["total"]
            self._bar.n = done
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.refresh()
        else:
            line = f"\r{self.name}: {done}/{p['total']} trials {postfix}"
            if line != self._last:
                sys.stderr.write(line)
                sys.stderr.flush()
                self._last = line

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._last:
            sys.stderr.write("\n")
