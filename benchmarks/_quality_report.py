"""The quality protocol's bookkeeping: parts on disk, statistics over seeds, the tables and the plot.

A run of ``quality.py`` leaves *parts*: per suite and method one ``search.json`` and one
``seed-<k>.json`` per retrain, plus ``reference.json`` (the rows that need no training).
Everything a reader sees (``quality*.json``, ``.md``, ``.png``) is built from the parts by
:func:`merge` alone, so a table is always what its parts say, whichever runs wrote them,
and ``python benchmarks/quality.py --merge`` rebuilds it at any time.

Statistics: per method and task the mean over seeds with a 95% confidence interval
(Student's t, n-1 degrees of freedom), and each method's paired difference to ``lora``
over the seeds both ran (the same seed means the same data order and initialisation).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import pyplot, save_figure

REFERENCE_METHOD = "lora"


def parts_dir(out: Path, suite: str) -> Path:
    return out / "quality_parts" / suite


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a run killed mid-write leaves the previous part, never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n")
    partial.replace(path)


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample sd and the half-width of the 95% t-interval (NaN half-width for one value)."""
    from scipy import stats

    data = [float(v) for v in values]
    n = len(data)
    if n == 0:
        return {"mean": math.nan, "sd": math.nan, "ci95": math.nan, "n": 0}
    sd = statistics.stdev(data) if n > 1 else math.nan
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
    return {"mean": statistics.fmean(data), "sd": sd, "ci95": half, "n": n}


def method_rows(part: dict[str, Any], tasks: Sequence[str]) -> dict[str, dict[int, float]]:
    """``{task or 'average': {seed: dev score}}`` of one method's retrains."""
    rows: dict[str, dict[int, float]] = {name: {} for name in [*tasks, "average"]}
    for seed_part in part["seeds"]:
        seed, metrics = int(seed_part["seed"]), seed_part["metrics"]
        for name in tasks:
            rows[name][seed] = float(metrics[f"{name}/score"])
        rows["average"][seed] = float(metrics["avg_dev_score"])
    return rows


def merge(out: Path, suite: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The suite's results from its parts: every method that has a search and at least one seed."""
    folder = parts_dir(out, suite)
    tasks = settings["tasks"]
    methods: dict[str, Any] = {}
    for label in settings["methods"]:
        search = read_json(folder / label / "search.json")
        seeds = sorted((read_json(p) for p in (folder / label).glob("seed-*.json")), key=lambda s: s["seed"]) if search else []
        seeds = [s for s in seeds if s and s["config"] == search["best_config"] and s["budget"] == search["budget"]]
        if not search or not seeds:
            continue
        part = {"search": search, "seeds": seeds}
        rows = method_rows(part, tasks)
        methods[label] = {
            "best_config": search["best_config"], "search_seconds": search["seconds"],
            "retrain_seconds": [s["seconds"] for s in seeds], "seeds": [s["seed"] for s in seeds],
            "epochs": [s["metrics"]["epoch"] for s in seeds], "scores": {k: mean_ci(list(v.values())) for k, v in rows.items()},
            "per_seed": {k: {str(s): x for s, x in v.items()} for k, v in rows.items()},
            "search_trials": search["trials"],
        }
    reference_rows = methods.get(REFERENCE_METHOD)
    for label, entry in methods.items():
        if reference_rows is None or label == REFERENCE_METHOD:
            continue
        entry["vs_lora"] = {}
        for key, per_seed in entry["per_seed"].items():
            ref = reference_rows["per_seed"][key]
            common = sorted(set(per_seed) & set(ref), key=int)
            entry["vs_lora"][key] = mean_ci([per_seed[s] - ref[s] for s in common])
    reference = {k: v for k, v in (read_json(folder / "reference.json") or {}).items() if not k.startswith("_")}
    return {"settings": settings, "reference": reference, "methods": methods}


def _cell(stat: dict[str, float]) -> str:
    if stat["n"] == 0:
        return "-"
    if stat["n"] == 1:
        return f"{stat['mean']:.3f} (1 seed)"
    return f"{stat['mean']:.3f} ± {stat['ci95']:.3f}"


def summarize(results: dict[str, Any]) -> str:
    """The Markdown table of a suite (its headline is the first table row's best average)."""
    s = results["settings"]
    tasks = s["tasks"]
    lines = [
        f"# Quality ({s['suite']}): {', '.join(tasks)}, all-MiniLM-L6-v2" + (" (SMOKE: a pipeline check)" if s["smoke"] else ""),
        "",
        f"- data: a fixed random sample of {s['train']} training rows per task, of which {s['holdout']:.0%} are held "
        f"out to select epochs and trials; scores on the full dev sets, which selection never sees",
        f"- budget per method: TPE {s['trials']} trials x up to {s['epochs']} epochs (patience {s['patience']}), "
        f"then the best config retrained with seeds {s['seeds']}; batch 16, {s['max_seq_len']} tokens",
        "- cells: mean ± 95% CI half-width (Student t) over seeds; 'vs lora': the paired difference per seed",
        "",
    ]
    reference = results.get("reference") or {}
    if reference:
        lines += ["Reference rows (no training): " + "; ".join(f"{k} {v:.3f}" for k, v in reference.items()), ""]
    lines += ["| method | " + " | ".join(tasks) + " | average | vs lora (average) | seeds | best config |",
              "|---" * (len(tasks) + 5) + "|"]
    for label, entry in results["methods"].items():
        scores = entry["scores"]
        diff = entry.get("vs_lora", {}).get("average")
        config = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry["best_config"].items())
        lines.append(f"| {label} | " + " | ".join(_cell(scores[t]) for t in tasks) + f" | {_cell(scores['average'])} | "
                     f"{_cell(diff) if diff else '-'} | {len(entry['seeds'])} | {config} |")
    missing = [m for m in s["methods"] if m not in results["methods"]]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    losers = _below_floor(results)
    if losers:
        lines += ["", "Below the floor (the `head` baseline, or the zero-shot reference) on a task's mean: " + "; ".join(losers)]
    cost = {m: e["search_seconds"] + sum(e["retrain_seconds"]) for m, e in results["methods"].items()}
    if cost:
        lines += ["", "Cost (s, search + retrains): " + ", ".join(f"{m} {c:.0f}" for m, c in cost.items())]
    return "\n".join(lines) + "\n"


def _below_floor(results: dict[str, Any]) -> list[str]:
    methods = results["methods"]
    out = []
    head = methods.get("head")
    for label, entry in methods.items():
        for task in results["settings"]["tasks"]:
            mean = entry["scores"][task]["mean"]
            floors = []
            if head is not None and label != "head":
                floors.append(("head", head["scores"][task]["mean"]))
            zero_shot = (results.get("reference") or {}).get(f"{task}/zero_shot_cosine")
            if zero_shot is not None:
                floors.append(("zero-shot", zero_shot))
            out += [f"{label} on {task} ({mean:.3f} < {name} {value:.3f})" for name, value in floors if mean < value]
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    keys = [*results["settings"]["tasks"], "average"]
    labels = list(results["methods"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(keys) * max(1, len(labels)) / 3), 4))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        stats = [results["methods"][label]["scores"][k] for k in keys]
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(keys))]
        errors = [0.0 if math.isnan(s["ci95"]) else s["ci95"] for s in stats]
        ax.bar(xs, [s["mean"] for s in stats], width, yerr=errors, capsize=2, label=label)
    for task, value in (results.get("reference") or {}).items():
        name = task.split("/")[0]
        if name in keys:
            j = keys.index(name)
            ax.hlines(value, j - 0.45, j + 0.45, colors="black", linestyles="dashed")
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylabel("dev score (mean, 95% CI over seeds)")
    ax.set_title(f"Quality ({results['settings']['suite']}); dashed: zero-shot reference")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)
