"""The plot kinds a study offers, by the names the API, the SDK and the CLI use.

Kept free of matplotlib and the store so the CLI can list kinds (and the SDK could)
without the drawing stack.
"""

from __future__ import annotations

# name -> what it shows (the API's docs and the CLI's help print these)
PLOT_KINDS: dict[str, str] = {
    "history": "best objective so far against trial number, each trial's best as a dot",
    "history-time": "best objective so far against wall time since the study started, every report as a dot",
    "curves": "each trial's per-task dev score over epochs, one panel per task (the best trial drawn thick)",
    "parallel": "parallel coordinates of the searched hyperparameters, one line per trial coloured by its best objective",
    "importance": "how strongly each hyperparameter goes with the objective (|Spearman rho|; eta for categories)",
    "alpha": "PEML: each cell's architecture weights softmax(alpha) over epochs as a heat map, and the chosen operation",
    "coordination": "task weights lambda and the gradient conflict score over epochs (coordination diagnostics)",
}
# Kinds about one trial (the best so far unless a trial number is given).
PER_TRIAL_KINDS: frozenset[str] = frozenset({"alpha", "coordination"})
FORMATS: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}
# Every plot's size in pixels (width, height) at DPI: fixed, so pages can lay them out.
DPI = 100
SIZES: dict[str, tuple[int, int]] = {
    "history": (1000, 600),
    "history-time": (1000, 600),
    "curves": (1200, 700),
    "parallel": (1200, 650),
    "importance": (900, 600),
    "alpha": (1400, 900),
    "coordination": (1000, 750),
}


def known_kinds() -> str:
    return ", ".join(PLOT_KINDS)
