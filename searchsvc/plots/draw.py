"""One drawing function per plot kind, each filling a matplotlib ``Figure`` from a StudyData.

Figures are built with the object API (``matplotlib.figure.Figure``), never pyplot: no
global state, so the API's worker threads can draw side by side. A kind with nothing to
show yet (a running study, a method without α) draws a figure that says so, rather than
failing: the same URL fills in as the study runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from searchsvc.plots.analysis import MIN_TRIALS_FOR_IMPORTANCE, hyperparameters, importance, parallel_axis, running_best
from searchsvc.plots.data import StudyData, seconds_since

Drawer = Callable[[Figure, StudyData, "int | None"], None]
_DRAWERS: dict[str, Drawer] = {}
STATE_COLOURS = {"completed": "tab:blue", "running": "tab:orange", "failed": "tab:red", "stopped": "tab:gray",
                 "paused": "tab:purple", "pending": "tab:gray"}


def drawer(kind: str) -> Callable[[Drawer], Drawer]:
    def register(func: Drawer) -> Drawer:
        if kind in _DRAWERS:
            raise ValueError(f"plot kind {kind!r} is already registered")
        _DRAWERS[kind] = func
        return func

    return register


def draw(kind: str, fig: Figure, data: StudyData, trial: int | None) -> None:
    _DRAWERS[kind](fig, data, trial)


def registered() -> list[str]:
    return list(_DRAWERS)


def _title(data: StudyData, what: str) -> str:
    s = data.study
    return f"study {s.id} '{s.name}' ({s.state}): {what}"


def _empty(fig: Figure, data: StudyData, what: str, why: str) -> None:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=13, wrap=True, transform=ax.transAxes)
    fig.suptitle(_title(data, what))


# ---- history ------------------------------------------------------------------------


@drawer("history")
def _history(fig: Figure, data: StudyData, trial: int | None) -> None:
    del trial
    scored = [t for t in data.trials if t.best_objective is not None]
    if not scored:
        _empty(fig, data, "best so far", "no trial has reported an objective yet")
        return
    ax = fig.add_subplot()
    numbers = [t.number for t in data.trials]
    best = running_best([t.best_objective for t in data.trials], mode=data.mode)
    ax.step([n for n, b in zip(numbers, best, strict=True) if b is not None], [b for b in best if b is not None],
            where="post", color="black", linewidth=2, label="best so far")
    for state, colour in STATE_COLOURS.items():
        group = [t for t in scored if t.state == state]
        if group:
            ax.scatter([t.number for t in group], [float(t.best_objective or 0.0) for t in group], color=colour,
                       s=40, zorder=3, label=f"trial's best ({state})")
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(data.metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    fig.suptitle(_title(data, f"best {data.metric} so far ({data.mode}) against trials"))


@drawer("history-time")
def _history_time(fig: Figure, data: StudyData, trial: int | None) -> None:
    del trial
    start = data.started_at()
    events = sorted(
        (seconds_since(start, r.created_at), r.objective, t.number)
        for t in data.trials for r in data.reports.get(t.id, [])
        if start is not None and r.objective is not None and r.created_at is not None
    )
    if not events:
        _empty(fig, data, "best so far against time", "no trial has reported an objective yet")
        return
    ax = fig.add_subplot()
    minutes = [e[0] / 60 for e in events]  # type: ignore[operator]
    best = [b if b is not None else math.nan for b in running_best([e[1] for e in events], mode=data.mode)]
    ax.step(minutes, best, where="post", color="black", linewidth=2, label="best so far")
    colours = _trial_colours(data)
    for t in data.trials:
        mine = [(m, e[1]) for m, e in zip(minutes, events, strict=True) if e[2] == t.number]
        if mine:
            ax.scatter([p[0] for p in mine], [p[1] for p in mine], color=colours[t.id], s=30, zorder=3,
                       label=f"trial #{t.number}'s epochs")
    ax.set_xlabel("minutes since the study started")
    ax.set_ylabel(data.metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    fig.suptitle(_title(data, f"best {data.metric} so far against wall time"))


# ---- curves -------------------------------------------------------------------------


@drawer("curves")
def _curves(fig: Figure, data: StudyData, trial: int | None) -> None:
    del trial
    tasks = [name for name in data.task_names if any(f"{name}/score" in r.metrics for rs in data.reports.values() for r in rs)]
    if not tasks:
        _empty(fig, data, "per-task dev curves", "no epoch has been reported yet")
        return
    best = data.best_trial()
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    colours = _trial_colours(data)
    for index, task in enumerate(tasks):
        ax = fig.add_subplot(rows, cols, index + 1)
        for t in data.trials:
            points = [(r.epoch, r.metrics[f"{task}/score"]) for r in data.reports.get(t.id, []) if f"{task}/score" in r.metrics]
            if not points:
                continue
            thick = best is not None and t.id == best.id
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, color=colours[t.id],
                    linewidth=3 if thick else 1.2, alpha=1.0 if thick else 0.75,
                    label=f"#{t.number}{' (best)' if thick else ''}")
        ax.set_title(f"{task}: dev score")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if index == 0:
            ax.legend(fontsize=7, ncol=2, title="trial", title_fontsize=7)
    fig.suptitle(_title(data, "each trial's per-task dev score over epochs"))


def _trial_colours(data: StudyData) -> dict[int, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(data.trials) <= 10 else "tab20"]
    return {t.id: cmap(i % cmap.N) for i, t in enumerate(data.trials)}


# ---- parallel coordinates -----------------------------------------------------------


@drawer("parallel")
def _parallel(fig: Figure, data: StudyData, trial: int | None) -> None:
    del trial
    names = hyperparameters(data)
    if not data.trials or not names:
        _empty(fig, data, "parallel coordinates", "no trial has started yet" if not data.trials else "nothing was searched")
        return
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    axes = [parallel_axis(n, [t.config.get(n) for t in data.trials], data.space.get(n)) for n in names]
    objective = [t.best_objective for t in data.trials]
    axes.append(parallel_axis(data.metric, objective, None))
    known = [v for v in objective if v is not None]
    norm = Normalize(min(known), max(known)) if known else Normalize(0, 1)
    cmap = colormaps["viridis" if data.mode == "max" else "viridis_r"]
    ax = fig.add_subplot()
    xs = list(range(len(axes)))
    order = sorted(range(len(data.trials)), key=lambda i: (objective[i] is not None, objective[i] or 0.0))
    for i in order:  # best drawn last, on top
        ys = [a.positions[i] for a in axes]
        points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        value = objective[i]
        colour = "lightgray" if value is None else cmap(norm(value))
        ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, linewidth=2, alpha=0.85, marker="o", markersize=3)
    for x, axis in zip(xs, axes, strict=True):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, label in axis.ticks:
            ax.text(x + 0.02, y, label, fontsize=8, va="center")
    ax.set_xticks(xs, [a.name for a in axes])
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, len(axes) - 0.6)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"trial's best {data.metric} (grey: none yet)")
    fig.suptitle(_title(data, "hyperparameters of every trial, coloured by objective"))


# ---- importance ---------------------------------------------------------------------


@drawer("importance")
def _importance(fig: Figure, data: StudyData, trial: int | None) -> None:
    del trial
    scores, used = importance(data)
    if not scores:
        _empty(fig, data, "hyperparameter importance",
               f"importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} trials with an objective ({used} so far)")
        return
    ax = fig.add_subplot()
    labels = [f"{s.name} ({'|rho|' if s.how == 'spearman' else 'eta'})" for s in scores][::-1]
    values = [s.score for s in scores][::-1]
    bars = ax.barh(labels, values, color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=9)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(f"association with {data.metric} (|Spearman rho| for numbers, correlation ratio eta for categories)")
    ax.grid(alpha=0.3, axis="x")
    fig.suptitle(_title(data, f"hyperparameter importance over {used} trials"))


# ---- PEML architecture ----------------------------------------------------------------


@drawer("alpha")
def _alpha(fig: Figure, data: StudyData, trial: int | None) -> None:
    chosen_trial = data.pick_trial(trial, needs="nas/architecture")
    reports = [r for r in data.reports.get(chosen_trial.id, []) if isinstance(r.metrics.get("nas/architecture"), list)] \
        if chosen_trial else []
    if chosen_trial is None or not reports:
        method = data.study.spec.get("method")
        why = (f"trial #{chosen_trial.number} has reported no architecture yet" if chosen_trial else "no trial has reported yet")
        if method != "peml" and not reports:
            why = f"no architecture weights: method {method!r} searches no prefix architecture (PEML does)"
        _empty(fig, data, "PEML architecture weights", why)
        return
    import numpy as np

    epochs = [r.epoch for r in reports]
    cells_per_epoch = [r.metrics["nas/architecture"] for r in reports]
    n_cells = max(len(cells) for cells in cells_per_epoch)
    cols = min(3, n_cells)
    rows = -(-n_cells // cols)
    last = cells_per_epoch[-1]
    # One colour scale for all cells, from the smallest to the largest weight seen: with 24
    # candidates near 1/24 each, a fixed 0..1 scale would paint every cell the same colour.
    seen = [float(w) for cells in cells_per_epoch for cell in cells for w in (cell.get("weights") or {}).values()]
    low, top = min(seen, default=0.0), max(seen, default=1.0)
    if top <= low:
        low, top = 0.0, max(top, 1e-9)
    image = None
    for c in range(n_cells):
        names: list[str] = []
        for cells in cells_per_epoch:
            for name in (cells[c].get("weights") or {}) if c < len(cells) else {}:
                if name not in names:
                    names.append(name)
        grid = np.full((len(names), len(epochs)), np.nan)  # NaN: pruned (or absent) at that epoch
        for e, cells in enumerate(cells_per_epoch):
            weights = (cells[c].get("weights") or {}) if c < len(cells) else {}
            for j, name in enumerate(names):
                if name in weights:
                    grid[j, e] = float(weights[name])
        ax = fig.add_subplot(rows, cols, c + 1)
        image = ax.imshow(grid, aspect="auto", cmap="magma", vmin=low, vmax=top, interpolation="nearest")
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs], fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=5 if len(names) > 12 else 7)
        ax.set_xlabel("epoch", fontsize=8)
        chosen = last[c].get("chosen") if c < len(last) else None
        ax.set_title(f"cell {c}: chosen {chosen}", fontsize=9)
        if chosen in names:
            ax.add_patch(_frame(len(epochs) - 1, names.index(chosen)))
    if image is not None:
        fig.colorbar(image, ax=fig.axes, shrink=0.6, label="softmax(alpha) weight (blank: pruned)")
    chosen_all = " | ".join(str(cell.get("chosen")) for cell in last)
    fig.suptitle(_title(data, f"trial #{chosen_trial.number}: softmax(alpha) per cell over epochs\n"
                              f"chosen architecture: {chosen_all}"), fontsize=11)


def _frame(x: int, y: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=1.5)


# ---- coordination ---------------------------------------------------------------------


@drawer("coordination")
def _coordination(fig: Figure, data: StudyData, trial: int | None) -> None:
    chosen_trial = data.pick_trial(trial, needs="task_weight/") or data.pick_trial(trial, needs="grad_conflict")
    reports = data.reports.get(chosen_trial.id, []) if chosen_trial else []
    weights = sorted({k for r in reports for k in r.metrics if k.startswith("task_weight/")})
    conflicts = [k for k in ("grad_conflict", "grad_conflict_after") if any(k in r.metrics for r in reports)]
    if chosen_trial is None or not (weights or conflicts):
        _empty(fig, data, "task coordination", "no trial has reported task weights or gradient conflict yet")
        return
    top = fig.add_subplot(2, 1, 1)
    for key in weights:
        points = [(r.epoch, r.metrics[key]) for r in reports if key in r.metrics]
        top.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key.removeprefix("task_weight/"))
    if weights:
        top.legend(fontsize=8, title="task")
    else:
        top.text(0.5, 0.5, "coordination is off for this study: no dynamic task weights", ha="center", va="center",
                 transform=top.transAxes)
    top.set_ylabel("task weight lambda")
    top.grid(alpha=0.3)
    bottom = fig.add_subplot(2, 1, 2, sharex=top)
    labels = {"grad_conflict": "before projection", "grad_conflict_after": "after projection"}
    for key in conflicts:
        points = [(r.epoch, r.metrics[key]) for r in reports if key in r.metrics]
        bottom.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=labels[key])
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel("gradient conflict\n(mean negative cosine)")
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.grid(alpha=0.3)
    if conflicts:
        bottom.legend(fontsize=8)
    fig.suptitle(_title(data, f"trial #{chosen_trial.number}: task weights and gradient conflict"))
